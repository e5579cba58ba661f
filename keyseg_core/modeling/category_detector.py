"""Category detector: which of the model's K categories are in view (not in the paper).

KeySeg-Tiny's LLM sees the frame through a small tower that stage 2 trains for the language loss; it
names the target right 85-97% of the time when the query names or describes it, but often guesses
an object that is not in the picture when it must look (kind, spatial and size queries), and it has
no way to say "not here". Stage 1 (`keyseg pretrain`) trains a vision tower with a patch head that
labels each patch with its category mix; frozen there, that tower and head tell which categories the
frame holds (on generated test scenes, AUC 0.98 between present and absent categories).

`CategoryDetector` is that frozen pair: (B, 3, s, s) CLIP pixels -> (B, K) probability that each
category is visible (the largest patch probability). `keyseg_core.inference.category_gate` combines it
with the codebook fusion's choice of category prompt. Two settings of how it is read travel with it:
`tiles`, the side of the corner tiles of the frame it also looks at (a fraction of the frame's; 0:
the frame alone), since a small object covers too little of a 16-px patch of the whole frame; and
`calibration` (a, b), visibility = sigmoid(a logit(v) + b), fitted on generated val scenes so that a
category in view reads near 1 (the raw largest patch probability of a present object is often 0.1-0.5).
Saved beside a checkpoint as `category_detector.safetensors` (tower + head in float16, category names,
tower config and those settings as metadata); `keyseg attach-detector` writes it from a stage-1 run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from keyseg_core.atomic import atomic_write_with

DETECTOR_FILE = "category_detector.safetensors"
TOWER_PREFIX = "mllm.base_model.model.model.vision_tower."  # the tower's names in a KeySeg checkpoint
HEADS_PATCH = "patch"  # the stage-1 heads' patch classifier (keyseg_core.train.stage1.loop.StageOneHeads)
IDENTITY = (1.0, 0.0)  # a calibration that leaves the visibility as it is


class CategoryDetector(nn.Module):
    """A vision tower and a patch classifier (background + K categories), frozen."""

    def __init__(self, vision_config: CLIPVisionConfig, names: list[str], feature_layer: int = -1,
                 tiles: float = 0.0, calibration: tuple[float, float] = IDENTITY) -> None:
        super().__init__()
        if len(set(names)) != len(names) or not names:
            raise ValueError("category detector: names must be non-empty and distinct")
        if not (tiles == 0.0 or 0.0 < tiles < 1.0):
            raise ValueError(f"category detector: tiles {tiles} must be 0 (none) or a fraction of the frame in (0, 1)")
        if len(calibration) != 2 or not calibration[0] > 0:
            raise ValueError(f"category detector: calibration {calibration} must be (a > 0, b)")
        self.names = list(names)
        self.feature_layer = feature_layer
        self.tiles = float(tiles)
        self.calibration = (float(calibration[0]), float(calibration[1]))
        self.tower = CLIPVisionModel(vision_config)
        self.patch = nn.Linear(vision_config.hidden_size, len(names) + 1)  # class 0: background
        self.requires_grad_(False).eval()

    @torch.no_grad()
    def patch_probs(self, clip_pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, s, s) -> (B, P, K): each patch's probability of each category (row-major patch grid)."""
        hidden = self.tower(pixel_values=clip_pixels.to(self.patch.weight.dtype),
                            output_hidden_states=True).hidden_states[self.feature_layer][:, 1:]  # (B, P, w)
        return self.patch(hidden).float().softmax(-1)[..., 1:]

    def forward(self, clip_pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, s, s) -> (B, K): for each category, its largest probability over the patches."""
        return self.patch_probs(clip_pixels).amax(dim=1)

    def calibrated(self, visible: torch.Tensor) -> torch.Tensor:
        """Raw visibility (any shape, in [0, 1]) -> sigmoid(a logit(v) + b); unchanged for (1, 0)."""
        if self.calibration == IDENTITY:
            return visible
        a, b = self.calibration
        v = visible.float().clamp(1e-6, 1 - 1e-6)
        return torch.sigmoid(a * torch.log(v / (1 - v)) + b)

    def save(self, path: str | Path) -> None:
        """float16 tensors + names and tower config as metadata, written atomically."""
        tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in self.state_dict().items()}
        meta = {"names": json.dumps(self.names), "vision_config": self.tower.config.to_json_string(),
                "feature_layer": str(self.feature_layer), "tiles": str(self.tiles),
                "calibration": json.dumps(list(self.calibration))}
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> CategoryDetector:
        path = Path(path)
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            detector = cls(CLIPVisionConfig.from_dict(json.loads(meta["vision_config"])), json.loads(meta["names"]),
                           int(meta.get("feature_layer", -1)), float(meta.get("tiles", 0.0)),
                           tuple(json.loads(meta.get("calibration", "[1.0, 0.0]"))))
            missing, unexpected = detector.load_state_dict(load_file(str(path)), strict=False)
        except (OSError, KeyError, ValueError, SafetensorError) as err:
            raise ValueError(f"{path}: not a category detector ({type(err).__name__}: {err})") from err
        if missing or unexpected:
            raise ValueError(f"{path}: not a category detector (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return detector.to(dtype)

    @classmethod
    def from_stage1(cls, bases: str | Path, names: list[str]) -> CategoryDetector:
        """The tower of a stage-1 run's final/ and the patch head of its heads.safetensors."""
        bases = Path(bases)
        model_dir, heads_file = bases / "final", bases / "heads.safetensors"
        for need in (model_dir / "config.json", model_dir / "trainable.safetensors", heads_file):
            if not need.is_file():
                raise FileNotFoundError(f"stage-1 run {bases}: {need} does not exist")
        vision, layer = _tower_config(json.loads((model_dir / "config.json").read_text()), model_dir)
        weights = load_file(str(model_dir / "trainable.safetensors"))
        tower = {k[len(TOWER_PREFIX):]: v for k, v in weights.items() if k.startswith(TOWER_PREFIX)}
        if not tower:
            raise ValueError(f"stage-1 run {bases}: no vision tower weights in {model_dir}/trainable.safetensors")
        heads = load_file(str(heads_file))
        weight, bias = heads.get(f"{HEADS_PATCH}.weight"), heads.get(f"{HEADS_PATCH}.bias")
        if weight is None or bias is None:
            raise ValueError(f"{heads_file}: no '{HEADS_PATCH}' head (keys: {', '.join(sorted(heads))})")
        if weight.shape[0] != len(names) + 1:
            raise ValueError(f"{heads_file}: the patch head has {weight.shape[0] - 1} categories, "
                             f"{len(names)} names given")
        detector = cls(vision, names, layer)
        detector.tower.load_state_dict(tower)
        detector.patch.load_state_dict({"weight": weight, "bias": bias})
        return detector


def _tower_config(config: dict, where: Path) -> tuple[CLIPVisionConfig, int]:
    """(tower config, feature layer) of a saved KeySegConfig whose tower was trained from scratch
    (`vision: random`)."""
    from keyseg_core.config.model import KeySegConfig
    from keyseg_core.modeling.mllm import random_vision_config

    try:
        backbone = KeySegConfig.from_dict(config).backbone
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}/config.json: not a KeySeg config ({err})") from err
    if backbone.vision != "random":
        raise ValueError(f"{where}/config.json: backbone.vision is '{backbone.vision}'; a category detector "
                         "comes from a stage-1 run whose tower was trained from scratch ('random')")
    return random_vision_config(backbone), backbone.vision_feature_layer
