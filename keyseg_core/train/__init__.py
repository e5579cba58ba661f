"""Training: stage 1 (`stage1`: SAM and the vision tower on generated scenes) and stage 2 (`stage2`:
KeySeg on ReasonSeg and its mixtures), sharing resumable state, the accelerate engine and the logger.

The CLI is `keyseg pretrain` / `keyseg train` (docs/training.md).
"""
