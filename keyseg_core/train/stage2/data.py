"""Training data: open the configured sources, mix them by ratio, and turn samples into batches.

Every sample is addressed by a global position (0, 1, 2, ...); position p of a run reads mixture
epoch p // length, item p % length, and picks its query paraphrase (and, with `questions: lisa`,
LISA's question and answer phrasing) with a generator seeded by (seed, p). The data position of a
run is therefore one integer (samples consumed), which is all a resume needs, whatever the worker
count. VQA items (LLaVA-Instruct conversations) carry no mask: they train the language model only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from keyseg_core.config.model import KEY_TOKEN, KeySegConfig
from keyseg_core.data import DatasetError, MixtureDataset, SegSample, SkipReport, open_dataset
from keyseg_core.data.refer import RefDataset
from keyseg_core.data.templates import KIND_OF_READER, lisa_answer, lisa_question
from keyseg_core.data.vqa import VqaDataset, VqaSample
from keyseg_core.modeling.processor import KeySegBatch, KeySegProcessor
from keyseg_core.train.stage2.config import DataSource, TrainConfig
from keyseg_core.train.stage2.kind_scenes import SOURCE_NAME as KIND_SCENES, KindScenes


@dataclass
class TrainSample:
    """What the collator needs from one sample: the reader's item plus its resolved query and keyword.

    `answer` replaces the model's no-[KEY] answer template (LISA's answer list); a VQA item has its
    first answer there and its later turns in `follow_ups`, and no mask.
    """

    position: int
    source: str
    sample: SegSample | VqaSample
    query: str
    keyword: str | None
    answer: str | None = None
    follow_ups: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class TrainBatch:
    batch: KeySegBatch
    sources: list[str]
    positions: list[int]


@dataclass
class OpenedData:
    """The opened sources and what opening them skipped (per source label)."""

    datasets: dict[str, Any]
    skips: dict[str, SkipReport] = field(default_factory=dict)

    def skip_counts(self) -> dict[str, dict[str, int]]:
        return {name: dict(report.counts) for name, report in self.skips.items() if report}


def open_sources(config: TrainConfig, model_config: KeySegConfig, skip_bad: bool) -> OpenedData:
    """Open every data source; strict mode raises the reader's error naming file and record."""
    datasets, skips = {}, {}
    for i, source in enumerate(config.data):
        kwargs = dict(source.options, skip_bad=skip_bad)
        base = source.name.split("|")[0]
        needs_keyword = model_config.fusion.use_key and source.keyword == "require" and base != "vqa"
        if base == "reasonseg":
            if source.keywords is not None:
                kwargs["keywords"] = source.keywords
            kwargs["require_keyword"] = needs_keyword
            kwargs.setdefault("validate", needs_keyword)  # a missing keyword stops the run now, not at step 900
        elif needs_keyword and base not in ("coco", KIND_SCENES):
            raise ValueError(
                f"data[{i}].keyword: '{source.name}' records carry no keyword; set it to 'category' "
                "(COCO category name), 'optional' or 'none'"
            )
        if base == KIND_SCENES:
            try:
                ds = KindScenes(source.split, **source.options)
            except (TypeError, ValueError) as exc:  # TypeError: an option it does not take
                raise ValueError(f"data[{i}] ({source.key}): {exc}") from exc
        else:
            try:
                ds = open_dataset(source.name, source.root, None if "|" in source.name else source.split, **kwargs)
            except DatasetError as exc:
                raise ValueError(f"data[{i}] ({source.key}): {exc}") from exc
        if len(ds) == 0:
            raise ValueError(f"data[{i}] ({source.key}): no usable records in {source.root} split {source.split}"
                             + (f"\n{ds.skips.summary()}" if getattr(ds, "skips", None) else ""))
        datasets[source.key] = ds
        skips[source.key] = getattr(ds, "skips", SkipReport())
    return OpenedData(datasets, skips)


def training_keywords(opened: OpenedData, sources: list[DataSource], use_key: bool) -> list[str]:
    """Every keyword the run can train [KEY] on, sorted: saved with the model as its decoding candidates."""
    found: set[str] = set()
    if not use_key:
        return []
    for source in sources:
        dataset = opened.datasets[source.key]
        if source.keyword == "none" or isinstance(dataset, (VqaDataset, KindScenes)):
            continue  # KindScenes' keywords are kind nouns, not objects to decode
        if source.keyword == "category" or hasattr(dataset, "coco"):
            found.update(str(name) for name in dataset.coco.categories.values())
            continue
        keywords = getattr(dataset, "keywords", {})
        for index, record in enumerate(dataset.records):
            keyword = keywords.get(record.stem) or dataset.annotation(index).keyword
            if keyword:
                found.add(keyword)
    return sorted(found)


def category_keyword(dataset: RefDataset, index: int) -> str:
    """The COCO category name of a refer item's annotation (the reader does not expose it as `keyword`)."""
    ref = dataset.refs[dataset.items[index].ref]
    ann = dataset.coco.annotation(ref["ann_id"], f"ref_id {ref.get('ref_id')}")
    return str(dataset.coco.categories[int(ann["category_id"])])


class TrainStream(torch.utils.data.Dataset):
    """Map-style view of the endless mixture: `stream[p]` is the sample at global position p."""

    def __init__(self, opened: OpenedData, sources: list[DataSource], length: int | None, seed: int, use_key: bool) -> None:
        self.policies = {s.key: s.keyword for s in sources}
        self.lisa_kind = {s.key: KIND_OF_READER[s.name.split("|")[0]] for s in sources
                          if s.questions == "lisa" and s.name.split("|")[0] in KIND_OF_READER}
        ratios = {s.key: s.ratio for s in sources}
        self.length = length or sum(len(d) for d in opened.datasets.values())
        self.mixture = MixtureDataset(opened.datasets, ratios, self.length, seed=seed)
        self.seed = seed
        self.use_key = use_key
        self._epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, position: int) -> TrainSample:
        epoch, offset = divmod(position, self.length)
        if epoch != self._epoch:
            self.mixture.set_epoch(epoch)
            self._epoch = epoch
        name, index = self.mixture.source_of(offset)
        dataset = self.mixture.datasets[name]
        sample = dataset[index]
        rng = np.random.default_rng([self.seed, position])
        if isinstance(sample, VqaSample):
            (query, answer), *later = sample.turns
            return TrainSample(position, name, sample, query, None, " " + answer, later)
        query = sample.queries[int(rng.integers(len(sample.queries)))]
        keyword = self._keyword(name, dataset, index, sample)
        kind = self.lisa_kind.get(name)
        if kind is None:
            return TrainSample(position, name, sample, query, keyword)
        query = lisa_question(kind, query, sample.is_sentence, rng)
        return TrainSample(position, name, sample, query, keyword, None if keyword else lisa_answer(rng))

    def _keyword(self, name: str, dataset: Any, index: int, sample: SegSample) -> str | None:
        policy = self.policies[name]
        if not self.use_key or policy == "none":
            return None
        if policy == "category":
            return sample.keyword or category_keyword(dataset, index)
        if policy == "require" and not sample.keyword:
            raise DatasetError(sample.annotation_path or name, sample.id, "no_keyword",
                               "the model uses [KEY] but this sample has no keyword")
        return sample.keyword


class Collator:
    """TrainSamples -> KeySegBatch through the model's processor (same template as inference)."""

    def __init__(self, processor: KeySegProcessor, config: KeySegConfig) -> None:
        self.processor = processor
        self.config = config
        self.n_key = config.template.answer.count(KEY_TOKEN)

    def __call__(self, items: list[TrainSample]) -> TrainBatch:
        template = self.config.template
        answers = [template.answer if it.keyword else it.answer or template.answer_no_key for it in items]
        batch = self.processor(
            [it.sample.image for it in items],
            [it.query for it in items],
            answers=answers,
            keywords=[[it.keyword] * self.n_key if it.keyword else [] for it in items],
            masks=[None if isinstance(it.sample, VqaSample) else it.sample.mask for it in items],
            follow_ups=[it.follow_ups for it in items],
        )
        # the target's name also for rows without [KEY] (prompt anchors); every target's for several
        batch.target_keywords = [getattr(it.sample, "targets", None) or it.keyword or getattr(it.sample, "keyword", None)
                                 for it in items]
        return TrainBatch(batch, [it.source for it in items], [it.position for it in items])


class RankBatches:
    """Positions of this rank's micro-batches, from `consumed` on: micro-batch m of the whole job
    covers positions consumed + m*world*bs ... and rank r takes its r-th slice."""

    def __init__(self, consumed: int, batch_size: int, rank: int, world: int) -> None:
        self.consumed, self.batch_size, self.rank, self.world = consumed, batch_size, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        start = self.consumed + self.rank * self.batch_size
        while True:
            yield list(range(start, start + self.batch_size))
            start += self.world * self.batch_size


def make_loader(stream: TrainStream, collator: Collator, consumed: int, batch_size: int, rank: int, world: int,
                num_workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        stream, batch_sampler=RankBatches(consumed, batch_size, rank, world), collate_fn=collator,
        num_workers=num_workers, persistent_workers=False,
    )
