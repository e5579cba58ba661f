"""Reason-Seg-Key builder: keyword extraction with an instruction model, normalisation, overrides."""

from keyseg_core.keywords.builder import KeywordBuildConfig, KeywordReport, build_keywords
from keyseg_core.keywords.extractor import PROMPT, build_prompt, parse_answer
from keyseg_core.keywords.normalize import NormalizeConfig, Normalized, clean, normalize, singularize

__all__ = [
    "PROMPT",
    "KeywordBuildConfig",
    "KeywordReport",
    "NormalizeConfig",
    "Normalized",
    "build_keywords",
    "build_prompt",
    "clean",
    "normalize",
    "parse_answer",
    "singularize",
]
