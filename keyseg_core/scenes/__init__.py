"""Synthetic reasoning-segmentation scenes: OpenMoji glyphs (exact masks from binarised alpha) on
photos and textures, with queries that need commonsense, spatial or size reasoning, written in the
ReasonSeg / Reason-Seg-Key layout (`keyseg generate`, docs/data.md)."""

from keyseg_core.scenes.compose import ObjectInfo, PlacedObject, Scene, render_scene, sample_layout
from keyseg_core.scenes.generator import GENERATOR_VERSION, Sample, SceneConfig, make_sample
from keyseg_core.scenes.knowledge import Knowledge, KnowledgeError, load_knowledge
from keyseg_core.scenes.queries import DEFAULT_WEIGHTS, QUERY_TYPES, Query, QuerySpec, is_valid, resolve
from keyseg_core.scenes.video import VideoSequence, generate_sequence
from keyseg_core.scenes.writer import generate_split

__all__ = [
    "DEFAULT_WEIGHTS",
    "GENERATOR_VERSION",
    "QUERY_TYPES",
    "Knowledge",
    "KnowledgeError",
    "ObjectInfo",
    "PlacedObject",
    "Query",
    "QuerySpec",
    "Sample",
    "Scene",
    "SceneConfig",
    "VideoSequence",
    "generate_sequence",
    "generate_split",
    "is_valid",
    "load_knowledge",
    "make_sample",
    "render_scene",
    "resolve",
    "sample_layout",
]
