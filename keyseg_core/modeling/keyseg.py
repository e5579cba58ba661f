"""KeySegModel: image + query -> MLLM -> [SEG]/[KEY] embeddings -> fusion -> SAM -> masks (+ losses).

`run` is the single forward path used by training and by the predictor; it reports each stage to an
optional timer so per-stage latency comes from the code that actually runs. `forward` adds the losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torch import nn

from keyseg_core.config.labels import IGNORE_TOKEN
from keyseg_core.config.model import KeySegConfig
from keyseg_core.modeling.fusion import FusionModule
from keyseg_core.modeling.keyword_head import KeywordHead, keyword_loss
from keyseg_core.modeling.losses import mask_bce_loss, mask_dice_loss
from keyseg_core.modeling.processor import KeySegBatch, SpecialTokenIds
from keyseg_core.modeling.sam import SamSegmenter, postprocess_masks
from keyseg_core.timing import Timer, no_timer

@dataclass
class KeySegOutput:
    """Masks are per sample: (n_seg_i, H_i, W_i) logits at the original image size."""

    mask_logits: list[torch.Tensor]
    iou_predictions: list[torch.Tensor]
    keyword_logits: torch.Tensor  # (N_key, V)
    key_batch: torch.Tensor  # (N_key,) sample of each [KEY]
    seg_batch: torch.Tensor  # (N_seg,) sample of each [SEG]
    hidden: torch.Tensor  # (B, L, d) last hidden states
    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    prompts: torch.Tensor | None = None  # (N_seg, C) the fused prompts S_hat SAM was given
    prompt_logits: torch.Tensor | None = None  # (N_seg, K) a codebook fusion's logits (FusionConfig.codebook)


@dataclass
class Reasoned:
    """What the LLM-bound half of the forward pass hands to SAM: S_hat per [SEG], keyword logits."""

    prompts: torch.Tensor  # (N_seg, C) fused prompts S_hat
    seg_batch: torch.Tensor  # (N_seg,) sample of each [SEG]
    keyword_logits: torch.Tensor  # (N_key, V)
    key_batch: torch.Tensor  # (N_key,) sample of each [KEY]
    hidden: torch.Tensor  # (B, L, d) last hidden states
    prompt_logits: torch.Tensor | None = None  # (N_seg, K) a codebook fusion's logits
    seg_hidden: torch.Tensor | None = None  # (N_seg, d) the [SEG] hidden states the fusion read


def image_features(llava_model: nn.Module, clip_pixels: torch.Tensor) -> torch.Tensor:
    """A LlavaModel's vision tower + projector: (B, 3, s, s) -> (B, n_img, d) visual tokens."""
    feats = llava_model.get_image_features(pixel_values=clip_pixels).pooler_output
    return torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats


class KeySegModel(nn.Module):
    """The KeySeg network. Parts are built by `modeling.build.build_model` and injected here."""

    def __init__(
        self,
        config: KeySegConfig,
        *,
        mllm: nn.Module,
        sam: SamSegmenter,
        fusion: FusionModule,
        keyword_head: KeywordHead,
        token_ids: SpecialTokenIds,
    ) -> None:
        super().__init__()
        self.config = config
        self.mllm = mllm  # peft-wrapped LlavaForConditionalGeneration
        self.sam = sam
        self.fusion = fusion
        self.keyword_head = keyword_head
        self.token_ids = token_ids

    @property
    def llava(self) -> nn.Module:
        """The LlavaForConditionalGeneration under the peft wrapper (LoRA layers are injected in place)."""
        return self.mllm.get_base_model()

    def vocab_embeddings(self) -> torch.Tensor:
        """E: the LLM's (V, d) input embedding table, base rows (frozen for all ordinary tokens)."""
        emb = self.llava.get_input_embeddings()
        return getattr(emb, "token_adapter", emb).weight  # peft's wrapper keeps the base table there

    # ---- the forward path, in named steps ----

    def run(self, batch: KeySegBatch, timer: Timer = no_timer) -> KeySegOutput:
        """Inference/training forward without losses; each stage is reported to `timer`.

        The two halves run on different clocks at inference (a question changes once in many
        seconds, frames arrive at camera rate): `reason` (vision tower, LLM, fusion: image + query
        -> S_hat, keyword logits) and `segment` (SAM: image + S_hat -> masks). Samples without a
        [SEG] (VQA conversations) go through the MLLM only: SAM encodes just the images that have a
        prompt, and their mask entries are empty (0, H, W).
        """
        reasoned = self.reason(batch, timer)
        masks, ious = self.segment(batch.sam_pixels, reasoned.prompts, reasoned.seg_batch, batch.resized_hw,
                                   batch.original_hw, timer)
        return KeySegOutput(masks, ious, reasoned.keyword_logits, reasoned.key_batch, reasoned.seg_batch,
                            reasoned.hidden, prompts=reasoned.prompts, prompt_logits=reasoned.prompt_logits)

    def reason(self, batch: KeySegBatch, timer: Timer = no_timer,
               image_features: torch.Tensor | None = None) -> Reasoned:
        """Vision tower, LLM prefill and fusion: the LLM-bound half of `run`.

        `image_features` (B, n_img, d), when given, replace the vision tower's output (an exported or
        compiled tower computed them, or a cache holds them).
        """
        with timer("vision_tower"):
            if image_features is None:
                image_features = self.encode_images(batch.clip_pixels)  # (B, n_img, d)
        with timer("llm_prefill"):
            hidden = self.run_llm(batch.input_ids, batch.attention_mask, image_features)  # (B, L, d)
        with timer("fusion"):
            return self.fuse(hidden, batch.input_ids, batch.attention_mask)

    def fuse(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Reasoned:
        """[SEG]/[KEY] embeddings of the LLM's last hidden states -> S_hat prompts and keyword logits."""
        seg, seg_b = self.gather(hidden, input_ids, self.token_ids.seg)  # (N_seg, d)
        key, key_b = self.gather(hidden, input_ids, self.token_ids.key)  # (N_key, d)
        prompts, logits = (self.fusion.fuse(seg, seg_b, key, key_b, hidden, attention_mask) if len(seg_b)
                           else (seg.new_zeros((0, self.sam.prompt_dim)), None))  # (N_seg, C), (N_seg, K)
        keyword_logits = self.keyword_head(key, self.vocab_embeddings())  # (N_key, V)
        return Reasoned(prompts, seg_b, keyword_logits, key_b, hidden, logits, seg)

    def segment(
        self, sam_pixels: torch.Tensor, prompts: torch.Tensor, seg_batch: torch.Tensor,
        resized_hw: list[tuple[int, int]], original_hw: list[tuple[int, int]], timer: Timer = no_timer,
        sam: nn.Module | None = None, image_embeddings: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """SAM image encoder, mask decoder and postprocessing: the SAM-bound half of `run`.

        Per sample: (n_seg, H, W) mask logits at the original size and (n_seg,) IoU predictions.
        `sam`: what runs SAM (an inference backend's segmenter); the model's own SAM by default.
        `image_embeddings`: (B, C, h, w) of all B images of `sam_pixels`, in batch order, encoded
        earlier (`encode_sam`, for example on another CUDA stream): the encoder is not run again, and
        the samples with a [SEG] take their rows.
        """
        sam = self.sam if sam is None else sam
        segmented = torch.unique(seg_batch).tolist()  # samples with at least one [SEG]
        if image_embeddings is not None:
            if image_embeddings.shape[0] != len(original_hw):
                raise ValueError(f"{image_embeddings.shape[0]} image embeddings for a batch of {len(original_hw)}")
            if len(segmented) < len(original_hw):
                image_embeddings = image_embeddings[segmented] if segmented else None
        elif segmented:
            pixels = sam_pixels if len(segmented) == len(original_hw) else sam_pixels[segmented]
            image_embeddings = self.encode_sam(pixels, timer, sam)  # (B_seg, C, h, w)
        masks, _, ious = self.decode_prompts(image_embeddings, prompts, seg_batch, segmented, resized_hw, original_hw,
                                             timer, sam=sam)
        return masks, ious

    def encode_sam(self, sam_pixels: torch.Tensor, timer: Timer = no_timer, sam: nn.Module | None = None
                   ) -> torch.Tensor:
        """SAM's image encoder (the `sam_encoder` stage of `segment`): (B, 3, S, S) -> (B, C, h, w)."""
        sam = self.sam if sam is None else sam
        with timer("sam_encoder"), torch.set_grad_enabled(torch.is_grad_enabled() and self.config.trainable.sam_image_encoder):
            return sam.encode(sam_pixels)

    def decode_prompts(
        self, image_embeddings: torch.Tensor | None, prompts: torch.Tensor, seg_batch: torch.Tensor,
        segmented: list[int], resized_hw: list[tuple[int, int]], original_hw: list[tuple[int, int]],
        timer: Timer = no_timer, mask_inputs: torch.Tensor | None = None, sam: nn.Module | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Encoded images + S_hat prompts -> per sample (n_seg, H, W) logits at the original size,
        (n_seg, 4h, 4w) low-res logits and (n_seg,) IoU predictions; n_seg = 0 for a sample without [SEG].

        The segmenter's per-frame path runs this too (one image, `mask_inputs` an earlier frame's
        low-res mask as SAM's dense prompt), so both clocks decode and postprocess the same way.
        """
        with timer("mask_decoder"):
            low_res, ious = self.decode_masks(image_embeddings, prompts, seg_batch, segmented, len(original_hw),
                                              mask_inputs, sam)
        with timer("postprocess"):
            masks = [
                postprocess_masks(m, resized_hw[i], original_hw[i], self.sam.image_size)
                if m.shape[0] else m.new_zeros((0, *original_hw[i]))
                for i, m in enumerate(low_res)
            ]
        return masks, low_res, ious

    def forward(self, batch: KeySegBatch) -> KeySegOutput:
        """Training forward: `run` plus L = w_ce CE + w_bce BCE + w_dice Dice + w_kw L_kw.

        Each term is a mean over what the batch has, as in LISA: CE over every labelled token (VQA
        answers included), BCE and Dice over the masks of the samples with a [SEG], the keyword loss
        over the [KEY]s. A term with nothing to average is 0 and gives no gradient.
        """
        if batch.labels is None or batch.gt_masks is None:
            raise ValueError("KeySegModel.forward needs labels and gt_masks; use run() for inference")
        out = self.run(batch)
        w = self.config.loss
        losses = {"ce": self.lm_loss(out.hidden, batch.labels)}
        losses["bce"] = mask_bce_loss(out.mask_logits, batch.gt_masks)
        losses["dice"] = mask_dice_loss(out.mask_logits, batch.gt_masks)
        if self.config.fusion.use_key:
            if batch.keyword_ids is None:
                raise ValueError("fusion.use_key is on but the batch has no keyword targets")
            flat = [ids for sample in batch.keyword_ids for ids in sample]
            losses["keyword"] = keyword_loss(out.keyword_logits, flat)
        else:
            losses["keyword"] = out.hidden.new_zeros(())
        out.loss = w.ce * losses["ce"] + w.bce * losses["bce"] + w.dice * losses["dice"] + w.keyword * losses["keyword"]
        out.losses = {k: v.detach() for k, v in losses.items()}
        return out

    # ---- steps ----

    def encode_images(self, clip_pixels: torch.Tensor) -> torch.Tensor:
        """CLIP tower + projector: (B, 3, s, s) -> (B, n_img, d). Both frozen."""
        return image_features(self.llava.model, clip_pixels)

    def run_llm(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """Embed tokens, put visual features at the <image> positions, run the LM: (B, L) -> (B, L, d)."""
        embeds = self.embed_with_images(input_ids, image_features)  # (B, L, d)
        out = self.llava.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask.long())
        return out.last_hidden_state

    def embed_with_images(self, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the visual features put at the <image> positions: (B, L) -> (B, L, d)."""
        embeds = self.llava.get_input_embeddings()(input_ids)
        is_image = (input_ids == self.token_ids.image).unsqueeze(-1)
        if int(is_image.sum()) != image_features.shape[0] * image_features.shape[1]:
            raise ValueError(
                f"{int(is_image.sum())} <image> tokens for {image_features.shape[0]}x{image_features.shape[1]} visual features"
            )
        return embeds.masked_scatter(is_image, image_features.to(embeds.dtype))

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.llava.get_output_embeddings()(hidden)

    def lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy over answer tokens (labels shifted by one).

        Logits are computed only where a label exists: the prompt (image tokens included) has none,
        and a (L, V) logit matrix per sample would cost more than the rest of a small model's step.
        """
        targets = labels[:, 1:]
        b, t = torch.nonzero(targets != IGNORE_TOKEN, as_tuple=True)
        if b.numel() == 0:
            return hidden.sum() * 0.0
        logits = self.lm_logits(hidden[:, :-1][b, t])  # (N_labelled, V)
        return F.cross_entropy(logits.float(), targets[b, t])

    def gather(self, hidden: torch.Tensor, input_ids: torch.Tensor, token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of every occurrence of `token_id`, and their sample index.

        'predicting' (LISA): the hidden state at the position whose next-token prediction is the
        token, i.e. hidden[:, t-1] for a token at t. 'at': hidden[:, t].
        """
        if self.config.template.token_position == "predicting":
            b, t = torch.nonzero(input_ids[:, 1:] == token_id, as_tuple=True)
        else:
            b, t = torch.nonzero(input_ids == token_id, as_tuple=True)
        return hidden[b, t], b

    def decode_masks(
        self, image_embeddings: torch.Tensor | None, prompts: torch.Tensor, seg_batch: torch.Tensor,
        segmented: list[int], batch_size: int, mask_inputs: torch.Tensor | None = None,
        sam: nn.Module | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per sample: its [SEG] prompts against its image embedding -> (n_seg, h, w) low-res logits and
        (n_seg,) IoU predictions; (0, h, w) and (0,) for a sample without [SEG].

        `image_embeddings` holds the images of `segmented` samples only, in that order.
        """
        side = self.sam.image_size // 4
        masks = [prompts.new_zeros((0, side, side)) for _ in range(batch_size)]
        ious = [prompts.new_zeros((0,)) for _ in range(batch_size)]
        if not segmented:
            return masks, ious
        per_image = [prompts[seg_batch == i] for i in segmented]
        counts = [len(p) for p in per_image]
        padded = pad_sequence(per_image, batch_first=True)  # (B_seg, N_max, C), zero rows past each count
        extra = {} if mask_inputs is None else {"mask_inputs": mask_inputs}
        sam = self.sam if sam is None else sam
        low, iou = sam.decode_batch(image_embeddings, padded.to(image_embeddings.dtype), **extra)  # one call
        for row, i in enumerate(segmented):
            masks[i], ious[i] = low[row, :counts[row]], iou[row, :counts[row]]
        return masks, ious

    # ---- bookkeeping ----

    def parameter_summary(self) -> list[tuple[str, int, int]]:
        """(part, trainable, total) for each top-level part and the whole model."""
        parts = {
            "vision_tower": self.llava.model.vision_tower,
            "projector": self.llava.model.multi_modal_projector,
            "language_model": self.llava.model.language_model,
            "lm_head": self.llava.lm_head,
            "fusion": self.fusion,
            "keyword_head": self.keyword_head,
            "sam_image_encoder": self.sam.sam.vision_encoder,
            "sam_prompt_encoder": self.sam.sam.prompt_encoder,
            "sam_mask_decoder": self.sam.sam.mask_decoder,
        }
        rows = []
        for name, module in parts.items():
            params = list({id(p): p for p in module.parameters()}.values())
            rows.append((name, sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)))
        unique = list({id(p): p for p in self.parameters()}.values())
        rows.append(("total", sum(p.numel() for p in unique if p.requires_grad), sum(p.numel() for p in unique)))
        return rows
