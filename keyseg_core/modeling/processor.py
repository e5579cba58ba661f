"""Turns images, queries, answers, keywords and masks into the tensors KeySegModel consumes.

One processor serves training and inference, so the prompt, the image-token expansion and the
answer template are identical in both. Conversation: `template.prompt` with <image> expanded to the
vision tower's patch count, then the answer (which carries [SEG]/[KEY]), then EOS; a multi-turn
sample (VQA) continues with `template.turn` and its next answer + EOS for each later turn. Labels
cover the answers and their EOS only. Keyword targets are the token ids of " " + keyword (the form
the word takes mid-sentence, e.g. "... is the bed"). A training sample without a mask (VQA) has no
[SEG]; its gt_masks entry is an empty (0, H, W) tensor and it is cut to `template.max_length` as
LISA cuts long conversations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from keyseg_core.config.labels import IGNORE_TOKEN
from keyseg_core.config.model import IMAGE_TOKEN, KEY_TOKEN, SEG_TOKEN, KeySegConfig
from keyseg_core.modeling.sam import SamImage, preprocess_sam

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class SpecialTokenIds:
    seg: int
    key: int
    image: int
    pad: int
    eos: int


@dataclass
class KeySegBatch:
    """A padded batch. Lists hold per-sample items whose sizes differ between samples."""

    input_ids: torch.Tensor  # (B, L) right-padded
    attention_mask: torch.Tensor  # (B, L) bool
    clip_pixels: torch.Tensor  # (B, 3, s, s)
    sam_pixels: torch.Tensor  # (B, 3, S, S)
    resized_hw: list[tuple[int, int]]
    original_hw: list[tuple[int, int]]
    labels: torch.Tensor | None = None  # (B, L), IGNORE_TOKEN outside the answer
    gt_masks: list[torch.Tensor] | None = None  # per sample (n_seg, H, W) uint8 0/1/255
    keyword_ids: list[list[list[int]]] | None = None  # per sample, per [KEY], keyword token ids
    prompt_lengths: list[int] = field(default_factory=list)  # tokens before the answer, per sample
    target_keywords: list[str | None] | None = None  # per sample, training only: its target's name (anchors)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> KeySegBatch:
        """Move tensors; pixel tensors also take `dtype` (the model's compute dtype)."""
        def px(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype) if dtype is not None else t.to(device)

        return KeySegBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            clip_pixels=px(self.clip_pixels),
            sam_pixels=px(self.sam_pixels),
            resized_hw=self.resized_hw,
            original_hw=self.original_hw,
            labels=None if self.labels is None else self.labels.to(device),
            gt_masks=None if self.gt_masks is None else [m.to(device) for m in self.gt_masks],
            keyword_ids=self.keyword_ids,
            prompt_lengths=self.prompt_lengths,
            target_keywords=self.target_keywords,
        )


def validate_image(image: np.ndarray, where: str = "image") -> np.ndarray:
    """Return an HxWx3 uint8 RGB array; grayscale, RGBA and 16-bit are converted, anything else refused."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{where}: expected a numpy array, got {type(image).__name__}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"{where}: dtype {image.dtype} is not supported (expected uint8 or uint16)")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where}: shape {image.shape} is not HxW, HxWx1, HxWx3 or HxWx4")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{where}: empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def normalise_clip(rgb: torch.Tensor) -> torch.Tensor:
    """(..., s, s, 3) uint8 CLIP canvas(es) -> (..., 3, s, s) float, CLIP's mean/std, on rgb's device."""
    x = rgb.float().movedim(-1, -3) / 255.0
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return (x - mean) / std


def clip_canvas(image: np.ndarray, size: int, mode: str = "pad") -> np.ndarray:
    """HxWx3 uint8 -> s x s x 3 uint8, resized (bicubic) as the backbone's `image_preprocess` says.

    'pad' (LLaVA-1.5): pad to a square with the mean colour, then resize. 'crop' (CLIP's own, LISA,
    LLaVA-v1): short side to `size`, centre crop. Normalising is separate (`normalise_clip`) so
    training can keep scenes as uint8 and normalise whole batches on the GPU.
    """
    h, w = image.shape[:2]
    if mode == "crop":
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(size * long / short)
        new_w, new_h = (size, new_long) if w <= h else (new_long, size)
        resized = Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return np.array(resized.crop((left, top, left + size, top + size)))
    side = max(h, w)
    fill = tuple(int(round(m * 255)) for m in CLIP_MEAN)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(Image.fromarray(image), ((side - w) // 2, (side - h) // 2))
    return np.array(canvas.resize((size, size), Image.BICUBIC))


def preprocess_clip(image: np.ndarray, size: int) -> torch.Tensor:
    """LLaVA-1.5 'pad' preprocessing: pad to square with the mean colour, resize (bicubic), normalise."""
    return normalise_clip(torch.from_numpy(clip_canvas(image, size, "pad")))


def preprocess_clip_crop(image: np.ndarray, size: int) -> torch.Tensor:
    """CLIP's own preprocessing (LISA, LLaVA-v1): short side to `size` (bicubic), centre crop, normalise."""
    return normalise_clip(torch.from_numpy(clip_canvas(image, size, "crop")))


class KeySegProcessor:
    """Tokenizer + template + image preprocessing for one model configuration."""

    def __init__(self, tokenizer, config: KeySegConfig, clip_size: int, num_image_tokens: int, sam_size: int):
        self.tokenizer = tokenizer
        self.config = config
        self.clip_size = clip_size
        self.num_image_tokens = num_image_tokens
        self.sam_size = sam_size
        self.ids = special_token_ids(tokenizer)

    def preprocess_clip(self, image: np.ndarray) -> torch.Tensor:
        """(3, s, s) CLIP input by the backbone's `image_preprocess`."""
        if self.config.backbone.image_preprocess == "crop":
            return preprocess_clip_crop(image, self.clip_size)
        return preprocess_clip(image, self.clip_size)

    def prompt_ids(self, query: str) -> list[int]:
        """Token ids of the user turn, with <image> expanded to one id per visual token."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"query must be a non-empty string, got {query!r}")
        text = self.config.template.prompt.format(query=query.strip())
        ids = self.tokenizer(text, add_special_tokens=True).input_ids
        if ids.count(self.ids.image) != 1:
            raise ValueError("query must not contain the image placeholder '<image>'")
        at = ids.index(self.ids.image)
        return ids[:at] + [self.ids.image] * self.num_image_tokens + ids[at + 1:]

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(answer, add_special_tokens=False).input_ids

    def _text_ids(self, text: str, i: int) -> list[int]:
        """Ids of an answer or a later turn; the image placeholder belongs in the first prompt only."""
        ids = self.answer_ids(text)
        if self.ids.image in ids:
            raise ValueError(f"sample {i}: '<image>' may appear only in the first prompt")
        return ids

    def _conversation(self, query: str, answer: str, follow_ups: list[tuple[str, str]], add_eos: bool,
                      i: int) -> tuple[list[int], list[int], int]:
        """(input ids, labels, prompt length) of one sample: prompt, answer (+ EOS), then each later
        turn and its answer."""
        eos = [self.ids.eos] if add_eos else []
        ids = self.prompt_ids(query)
        prompt = len(ids)
        labels = [IGNORE_TOKEN] * prompt
        turns = [(None, answer)] + [(self.config.template.turn.format(query=q.strip()), " " + a.strip())
                                    for q, a in follow_ups]
        for turn, reply in turns:
            if turn is not None:
                asked = self._text_ids(turn, i)
                ids, labels = ids + asked, labels + [IGNORE_TOKEN] * len(asked)
            said = self._text_ids(reply, i) + eos
            ids, labels = ids + said, labels + said
        return ids, labels, prompt

    def keyword_ids(self, keyword: str) -> list[int]:
        """Token ids of a keyword as it appears mid-sentence (leading space)."""
        if not keyword or not keyword.strip():
            raise ValueError("keyword must be a non-empty string")
        return self.tokenizer(" " + keyword.strip(), add_special_tokens=False).input_ids

    def __call__(
        self,
        images: list[np.ndarray],
        queries: list[str],
        answers: list[str] | None = None,
        keywords: list[list[str]] | None = None,
        masks: list[np.ndarray | None] | None = None,
        add_eos: bool | None = None,
        follow_ups: list[list[tuple[str, str]]] | None = None,
    ) -> KeySegBatch:
        """Build a batch.

        Args:
            images: HxWx3 uint8 RGB arrays.
            queries: one query per image.
            answers: answer text per sample (default: the config's template, which is what inference forces).
            keywords: per sample, one keyword per [KEY] in its answer (training only).
            masks: per sample (n_seg, H, W) or (H, W) uint8 ground truth with 255 = ignore, or None for
                a sample without [SEG] such as a VQA conversation (training only).
            add_eos: append EOS after each answer (default: when training, i.e. masks or keywords given).
            follow_ups: per sample, later (question, answer) turns of a multi-turn conversation.
        """
        if len(images) != len(queries):
            raise ValueError(f"{len(images)} images but {len(queries)} queries")
        answers = answers or [self.config.answer] * len(images)
        training = masks is not None or keywords is not None
        add_eos = training if add_eos is None else add_eos
        limit = self.config.template.max_length
        seqs, labels, prompt_lengths = [], [], []
        for i, (query, answer) in enumerate(zip(queries, answers)):
            seq, lab, prompt = self._conversation(query, answer, follow_ups[i] if follow_ups else [], add_eos, i)
            if len(seq) > limit:
                if not (training and masks is not None and masks[i] is None and prompt < limit):
                    raise ValueError(
                        f"sample {i}: {len(seq)} tokens (query {prompt - self.num_image_tokens} + "
                        f"image {self.num_image_tokens} + answer {len(seq) - prompt}) exceed the context of "
                        f"{limit} tokens"
                    )
                seq, lab = seq[:limit], lab[:limit]  # a conversation without [SEG]: cut, as LISA does
            seqs.append(seq)
            labels.append(lab)
            prompt_lengths.append(prompt)
        length = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), length), self.ids.pad, dtype=torch.long)
        label_t = torch.full((len(seqs), length), IGNORE_TOKEN, dtype=torch.long)
        attention = torch.zeros((len(seqs), length), dtype=torch.bool)
        for i, (s, lab) in enumerate(zip(seqs, labels)):
            input_ids[i, : len(s)] = torch.tensor(s)
            label_t[i, : len(lab)] = torch.tensor(lab)
            attention[i, : len(s)] = True
        images = [validate_image(img, f"image {i}") for i, img in enumerate(images)]
        sam_inputs: list[SamImage] = [preprocess_sam(img, self.sam_size) for img in images]
        batch = KeySegBatch(
            input_ids=input_ids,
            attention_mask=attention,
            clip_pixels=torch.stack([self.preprocess_clip(img) for img in images]),
            sam_pixels=torch.stack([s.pixels for s in sam_inputs]),
            resized_hw=[s.resized_hw for s in sam_inputs],
            original_hw=[s.original_hw for s in sam_inputs],
            labels=label_t if training else None,
            prompt_lengths=prompt_lengths,
        )
        if masks is not None:
            batch.gt_masks = [self._mask_tensor(m, seqs[i], images[i], i) for i, m in enumerate(masks)]
        if keywords is not None:
            batch.keyword_ids = [self._keyword_targets(kws, seqs[i], i) for i, kws in enumerate(keywords)]
        return batch

    def _mask_tensor(self, mask: np.ndarray | None, seq: list[int], image: np.ndarray, i: int) -> torch.Tensor:
        n_seg = seq.count(self.ids.seg)
        if mask is None:
            if n_seg:
                raise ValueError(f"sample {i}: {n_seg} [SEG] token(s) in the answer but no mask")
            return torch.zeros((0, *image.shape[:2]), dtype=torch.uint8)
        m = torch.from_numpy(np.array(mask, dtype=np.uint8))  # a copy: readers may hand out read-only views
        m = m[None] if m.ndim == 2 else m
        if m.ndim != 3 or m.shape[1:] != image.shape[:2]:
            raise ValueError(f"sample {i}: mask shape {tuple(m.shape)} does not match image {image.shape[:2]}")
        if m.shape[0] != n_seg:
            raise ValueError(f"sample {i}: {m.shape[0]} masks but {n_seg} [SEG] tokens in the answer")
        return m

    def _keyword_targets(self, keywords: list[str], seq: list[int], i: int) -> list[list[int]]:
        n_key = seq.count(self.ids.key)
        if len(keywords) != n_key:
            raise ValueError(f"sample {i}: {len(keywords)} keywords but {n_key} [KEY] tokens in the answer")
        return [self.keyword_ids(k) for k in keywords]


def add_special_tokens(tokenizer) -> None:
    """Register [SEG], [KEY] (and <image> where missing) as special tokens; ensure a pad token."""
    new = [t for t in (SEG_TOKEN, KEY_TOKEN, IMAGE_TOKEN) if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def special_token_ids(tokenizer) -> SpecialTokenIds:
    vocab = tokenizer.get_vocab()
    missing = [t for t in (SEG_TOKEN, KEY_TOKEN, IMAGE_TOKEN) if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks special tokens {missing}; call add_special_tokens first")
    return SpecialTokenIds(
        seg=vocab[SEG_TOKEN], key=vocab[KEY_TOKEN], image=vocab[IMAGE_TOKEN],
        pad=tokenizer.pad_token_id, eos=tokenizer.eos_token_id,
    )
