"""Data readers (ReasonSeg / Reason-Seg-Key, refCOCO family, COCO instances), the common
SegSample item, mixing by ratio, and bad-input reporting. Formats: docs/data.md."""

from keyseg_core.data.coco import CocoInstancesDataset
from keyseg_core.data.errors import DatasetError, SkipReport
from keyseg_core.data.keyword_file import KEYWORD_FILE, KeywordEntry, read_keyword_file, write_keyword_file
from keyseg_core.data.mixture import LISA_RATIOS, MixtureDataset, parse_ratios
from keyseg_core.data.reasonseg import ReasonSegDataset
from keyseg_core.data.refer import RefDataset, load_refs
from keyseg_core.data.registry import DATASETS, open_dataset, parse_eval_name
from keyseg_core.data.sample import SegSample

__all__ = [
    "DATASETS",
    "KEYWORD_FILE",
    "LISA_RATIOS",
    "CocoInstancesDataset",
    "DatasetError",
    "KeywordEntry",
    "MixtureDataset",
    "ReasonSegDataset",
    "RefDataset",
    "SegSample",
    "SkipReport",
    "load_refs",
    "open_dataset",
    "parse_eval_name",
    "parse_ratios",
    "read_keyword_file",
    "write_keyword_file",
]
