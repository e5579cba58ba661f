"""Reasoner: image + query -> fused prompt S_hat, keyword and answer (the LLM-bound half of KeySeg).

A question changes once in many seconds while frames arrive at camera rate, so inference splits
along those two clocks: this module runs the vision tower, the LLM and the fusion module and hands
the segmenter (`segmenter.py`, SAM-bound) what it needs on every later frame, a `Reasoning`.

Three ways in:
  reason_batch    one padded batch of (image, query) pairs through `KeySegModel.reason`, exactly the
                  computation of `KeySegModel.run` (the one-shot predictor's path);
  reason_frame    several queries on one frame: the vision tower runs once per frame, the prompt
                  prefix up to the image tokens is prefilled once per frame (its KV cache and hidden
                  states are kept on the `FrameFeatures`) and the queries' suffixes run as one batch;
  generate mode   the answer is generated token by token from the prefilled prompt; the generated
                  ids and their hidden states are what [SEG] and [KEY] are read from (no second pass).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers import DynamicCache

from keyseg_core.config.default_keywords import COCO_CATEGORIES
from keyseg_core.config.model import KEY_TOKEN, SEG_TOKEN
from keyseg_core.inference.category_gate import CategoryGate
from keyseg_core.inference.preprocess import clip_pixels, placement
from keyseg_core.inference.static_prefill import StaticPrefill, cache_keyword
from keyseg_core.modeling.keyseg import KeySegModel, Reasoned
from keyseg_core.modeling.keyword_head import KeywordCandidate
from keyseg_core.modeling.keyword_head import decode_keywords
from keyseg_core.modeling.processor import KeySegBatch, KeySegProcessor, validate_image
from keyseg_core.timing import Timer, no_timer

MODES = ("prefill", "generate")


@dataclass
class Reasoning:
    """One query's reasoning on one frame: all the segmenter needs to segment later frames.

    Attributes:
        query: the question.
        prompts: (n_seg, C) fused prompts S_hat, one per [SEG] of the answer (n_seg may be 0: a
            generated answer without [SEG] in a model without the forced template).
        keyword, keyword_prob, keyword_topk: decoded from the first [KEY] ("" without one).
        answer: readable answer text (template reply or generated text).
        timings_ms: the stages this reasoning ran (vision_tower, llm_prefill, generate, fusion).
        frame_hw: (H, W) of the frame it reasoned on.
        finished: time.monotonic() when it was done (the age of a streamed mask counts from here).
        category_mass: with a category gate, the share of the model's belief about the target that falls
            on categories in view (`keyseg_core.inference.category_gate`); None without one.
        instance_keywords: with a category gate and an instance share, the categories in view that hold
            at least that share of the first [SEG]'s gated belief, best first: then `prompts` starts with
            their codebook rows, one per category (row 0 is the answer's), and the [SEG]s after the
            first follow. Empty otherwise.
        categories: with a category gate, the category (codebook row) of each leading prompt row: the
            answer's, then the other instances'; empty without a gate.
        sight: with a category gate, the detector's (P, K) patch probabilities on the reasoned frame.
        visible: with a category gate, the detector's (K,) calibrated visibility of each category there.
        seg_hidden: the first [SEG]'s (d,) last hidden state (what the geometry ranker reads, and
            `keyseg fit-ranker` fits on); None without a [SEG].
    """

    query: str
    prompts: torch.Tensor
    keyword: str
    keyword_prob: float
    keyword_topk: list[KeywordCandidate]
    answer: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    frame_hw: tuple[int, int] = (0, 0)
    finished: float = field(default_factory=time.monotonic)
    category_mass: float | None = None
    instance_keywords: list[str] = field(default_factory=list)
    categories: list[int] = field(default_factory=list)
    sight: torch.Tensor | None = None
    visible: torch.Tensor | None = None
    seg_hidden: torch.Tensor | None = None


@dataclass
class _Prefix:
    """The prefilled prompt prefix of one frame: token ids, last hidden states, per-layer K/V."""

    ids: list[int]
    hidden: torch.Tensor  # (1, P, d)
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (1, heads, P, head_dim)


@dataclass
class FrameFeatures:
    """What the reasoner keeps of one frame so that further queries on it skip the image work."""

    image_hw: tuple[int, int]
    image_features: torch.Tensor  # (1, n_img, d) vision tower + projector output
    sight: torch.Tensor | None = None  # (P, K) the category gate's patch probabilities
    visible: torch.Tensor | None = None  # (K,) its calibrated visibility of each category
    prefixes: dict[tuple[int, ...], _Prefix] = field(default_factory=dict)


def cache_token_tables(model: torch.nn.Module) -> int:
    """Keep peft's merged embedding / lm_head tables between calls at inference; returns how many.

    peft's trainable-token layers (the [SEG]/[KEY] rows) rebuild the whole (V, d) table with
    `index_copy` on every call: ~50 ms for SmolLM2's 49k x 576 table on a CPU, once per prefill and
    twice per generated token. Without gradients the merged table is kept and reused for as long as
    the base table and the trained rows are unchanged (their version counters and storage), so the
    values are exactly those peft computes. With gradients (training) peft's own code runs.
    """
    try:
        from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    except ImportError:  # another peft layout: nothing to cache
        return 0
    count = 0
    for module in model.modules():
        if not isinstance(module, TrainableTokensLayer) or getattr(module, "_keyseg_cached", False):
            continue
        merge = module.get_merged_weights
        memo: dict = {}

        def cached(active_adapters, _merge=merge, _module=module, _memo=memo):
            if torch.is_grad_enabled():
                return _merge(active_adapters)
            weight = _module.base_layer.weight
            deltas = [_module.trainable_tokens_delta[a] for a in active_adapters]
            key = (tuple(active_adapters), weight.data_ptr(), weight._version,
                   *((d.data_ptr(), d._version) for d in deltas))
            if _memo.get("key") != key:
                _memo["key"], _memo["table"] = key, _merge(active_adapters)
            return _memo["table"]

        module.get_merged_weights = cached
        module._keyseg_cached = True
        count += 1
    return count


def split_prompt(processor: KeySegProcessor, query: str, answer: list[int]) -> tuple[list[int], list[int]]:
    """(prefix through the last image token, rest) of the query's prompt + answer ids."""
    ids = processor.prompt_ids(query) + answer
    limit = processor.config.template.max_length
    if len(ids) > limit:
        raise ValueError(f"{len(ids)} tokens (image {processor.num_image_tokens} + text) exceed the "
                         f"context of {limit} tokens")
    image = processor.ids.image
    last = len(ids) - 1 - ids[::-1].index(image)
    return ids[: last + 1], ids[last + 1:]


class Reasoner:
    """Runs the LLM-bound half of a KeySegModel: images + queries -> `Reasoning`s.

    `vision` replaces the vision tower + projector (an exported or compiled graph: (B, 3, s, s) ->
    (B, n_img, d)); `llm` runs the prefix prefill and the suffix extension at static shapes
    (`StaticPrefill`: StaticCache, compiled; the same hidden states), else they run eagerly with a
    DynamicCache (the generation steps always do); `gate` picks each [SEG]'s category prompt among
    the categories in view (`CategoryGate`; a codebook fusion only) and, with `instance_share`, every
    category in view holding that share of the belief becomes an instance ("all the fruit");
    `passes` counts language-model forward passes (prefill or a batch of suffixes), `steps` the
    token-by-token generation steps, so callers and tests can see when the LLM ran.
    """

    def __init__(self, model: KeySegModel, processor: KeySegProcessor, *, mode: str = "prefill",
                 max_new_tokens: int = 48, vision: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 llm: StaticPrefill | None = None, gate: CategoryGate | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode '{mode}' is not one of {', '.join(MODES)}")
        if gate is not None and model.fusion.codebook is None:
            raise ValueError("a category gate needs a codebook fusion (fusion.codebook > 0)")
        self.model = model
        self.processor = processor
        self.mode = mode
        self.max_new_tokens = max_new_tokens
        self.vision = vision
        self.llm = llm
        self.gate = gate
        self.instance_share: float | None = None
        self.device, self.dtype, self.on_device, self._upload = placement(model)
        vocab = model.config.keyword.vocabulary
        # where the candidates come from, for messages: decoding normalises over exactly this list
        self.keyword_source = "model config" if vocab else "COCO's 80 categories (the model names none)"
        self.keyword_candidates = list(dict.fromkeys(vocab or COCO_CATEGORIES))
        self._candidate_ids = [processor.keyword_ids(k) for k in self.keyword_candidates]
        self._cache_kw = cache_keyword(model.llava.model.language_model)
        self._stop_ids = self._eos_ids()
        self.passes = 0
        self.steps = 0

    # ---- one padded batch: the computation of KeySegModel.run ----

    def vision_features(self, clip_pixels: torch.Tensor, timer: Timer = no_timer) -> torch.Tensor:
        """The vision tower + projector: the backend's runner, or the model's own."""
        with timer("vision_tower"):
            return self.vision(clip_pixels) if self.vision is not None else self.model.encode_images(clip_pixels)

    def sight(self, clip_pixels: torch.Tensor, timer: Timer = no_timer) -> torch.Tensor | None:
        """(B, P, K) the gate's patch probabilities of each category (its detector is a second vision
        tower); None without a gate."""
        if self.gate is None:
            return None
        with timer("vision_tower"):
            return self.gate.sight(clip_pixels)

    def sight_frame(self, image: np.ndarray, timer: Timer = no_timer) -> torch.Tensor | None:
        """(P, K) the gate's patch probabilities on one HxWx3 frame; None without a gate."""
        if self.gate is None:
            return None
        return self.sight(self._clip_pixels(validate_image(image), timer), timer)[0]

    def visible(self, sight: torch.Tensor, image: np.ndarray | None, timer: Timer = no_timer) -> torch.Tensor:
        """(K,) the gate's visibility of each category on a frame, from its (P, K) `sight` and, when the
        detector looks at tiles too, the frame itself (validated HxWx3)."""
        tiles = []
        if self.gate.detector.tiles:
            if image is None:
                raise ValueError("the category detector also looks at tiles of the frame: give the images")
            tiles = self.gate.tiles(image)
        tiles_sight = self.sight(torch.cat([self._clip_pixels(t, timer) for t in tiles]), timer) if tiles else None
        return self.gate.visible(sight, tiles_sight)

    def reason_batch(self, batch: KeySegBatch, queries: list[str], timer: Timer = no_timer,
                     features: torch.Tensor | None = None, images: list[np.ndarray] | None = None
                     ) -> tuple[Reasoned, list[Reasoning]]:
        """Prefill mode over a prepared batch (forced answer template), as `KeySegModel.run` does.
        `features`: the vision tower's output computed already (`vision_features`); `images`: the
        batch's validated frames, which a category detector that looks at tiles needs."""
        if features is None and self.vision is not None:
            features = self.vision_features(batch.clip_pixels, timer)
        sight = self.sight(batch.clip_pixels, timer)
        visible = [None] * len(queries) if sight is None else \
            [self.visible(sight[i], None if images is None else images[i], timer) for i in range(len(queries))]
        self.passes += 1
        reasoned = self.model.reason(batch, timer, image_features=features)
        hw = batch.original_hw
        reasonings = [self._reasoning(reasoned, i, q, None, hw[i], None if sight is None else sight[i], visible[i])
                      for i, q in enumerate(queries)]
        if sight is not None:  # SAM segments the batch from `reasoned`: give it the gated prompts too
            rows = [r.prompts for r in reasonings]
            seg_batch = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(rows)])
            reasoned = replace(reasoned, prompts=torch.cat(rows), seg_batch=seg_batch.to(reasoned.seg_batch.device))
        return reasoned, reasonings

    # ---- one frame, any number of queries, cached ----

    def encode_frame(self, image: np.ndarray, timer: Timer = no_timer) -> FrameFeatures:
        """Vision tower + projector of one frame, kept for every query asked about it."""
        image = validate_image(image)
        pixels = self._clip_pixels(image, timer)
        sight = self.sight(pixels, timer)
        return FrameFeatures(image.shape[:2], self.vision_features(pixels, timer),
                             sight=None if sight is None else sight[0],
                             visible=None if sight is None else self.visible(sight[0], image, timer))

    def _clip_pixels(self, image: np.ndarray, timer: Timer) -> torch.Tensor:
        """(1, 3, s, s) CLIP pixels of one validated frame, on the model's device and in its dtype."""
        with timer("preprocess"):
            if self.on_device:
                return clip_pixels(self._upload(image), self.processor.clip_size,
                                   self.model.config.backbone.image_preprocess)[None].to(self.dtype)
            return self.processor.preprocess_clip(image)[None].to(self.device, self.dtype)

    def reason_frame(self, frame: FrameFeatures, queries: list[str], timer: Timer = no_timer) -> list[Reasoning]:
        """Reason about several queries on one encoded frame.

        Prefill mode runs the queries as one batch over the frame's prefilled prefix; generate mode
        generates each answer from the same prefix.
        """
        if not queries:
            raise ValueError("give at least one query")
        if self.mode == "generate":
            return [self._generate(frame, q, timer) for q in queries]
        answer = self.processor.answer_ids(self.model.config.answer)
        prompts = [self._prompt(q, answer) for q in queries]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (prefix, _) in enumerate(prompts):
            groups.setdefault(tuple(prefix), []).append(i)
        results: list[Reasoning | None] = [None] * len(queries)
        for prefix_ids, members in groups.items():
            prefix = self._prefix(frame, list(prefix_ids), timer)
            with timer("llm_prefill"):
                hidden, ids, mask = self._extend(prefix, [prompts[i][1] for i in members])
            with timer("fusion"):
                reasoned = self.model.fuse(hidden, ids, mask)
                for row, i in enumerate(members):
                    results[i] = self._reasoning(reasoned, row, queries[i], None, frame.image_hw, frame.sight,
                                                 frame.visible)
        return results  # type: ignore[return-value]

    def reason(self, image: np.ndarray, query: str, timer: Timer = no_timer) -> Reasoning:
        """One query on one frame (the streaming reasoner's call)."""
        return self.reason_frame(self.encode_frame(image, timer), [query], timer)[0]

    # ---- steps ----

    def _prompt(self, query: str, answer: list[int]) -> tuple[list[int], list[int]]:
        return split_prompt(self.processor, query, answer)

    def _language_model(self, embeds: torch.Tensor, mask: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        self.passes += 1
        out = self.model.llava.model.language_model(inputs_embeds=embeds, attention_mask=mask.long(),
                                                    use_cache=True, **{self._cache_kw: cache})
        return out.last_hidden_state

    def _prefix(self, frame: FrameFeatures, ids: list[int], timer: Timer) -> _Prefix:
        """The frame's prefilled prefix for these ids (computed once per frame and prefix)."""
        key = tuple(ids)
        if key in frame.prefixes:
            return frame.prefixes[key]
        with timer("llm_prefill"):
            ids_t = torch.tensor([ids], device=self.device)
            embeds = self.model.embed_with_images(ids_t, frame.image_features)
            if self.llm is not None:
                self.passes += 1
                hidden, kv = self.llm.prefill(embeds)
            else:
                cache = DynamicCache(config=self._lm_config())
                hidden = self._language_model(embeds, torch.ones_like(ids_t), cache)
                kv = [(layer.keys, layer.values) for layer in cache.layers]
        prefix = _Prefix(ids, hidden, kv)
        frame.prefixes[key] = prefix
        return prefix

    def _lm_config(self):
        return self.model.llava.model.language_model.config

    def _cache_for(self, prefix: _Prefix, batch: int) -> DynamicCache:
        """A fresh cache holding the prefix, repeated for `batch` rows (the prefix itself stays)."""
        return DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1).contiguous(),
                                             v.expand(batch, -1, -1, -1).contiguous()) for k, v in prefix.kv],
                            config=self._lm_config())

    def _extend(self, prefix: _Prefix, suffixes: list[list[int]]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run right-padded suffixes after the prefix: (B, P+S, d) hidden, (B, P+S) ids, (B, P+S) mask."""
        b, p = len(suffixes), len(prefix.ids)
        length = max(len(s) for s in suffixes)
        ids = torch.full((b, length), self.processor.ids.pad, dtype=torch.long)
        mask = torch.zeros((b, p + length), dtype=torch.bool)
        mask[:, :p] = True
        for i, s in enumerate(suffixes):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, p: p + len(s)] = True
        ids, mask = ids.to(self.device), mask.to(self.device)
        embeds = self.model.llava.get_input_embeddings()(ids)
        hidden = self.llm.extend(prefix.kv, embeds, mask) if self.llm is not None else None
        if hidden is None:  # eager, or a suffix longer than the static runner's largest bucket
            hidden = self._language_model(embeds, mask, self._cache_for(prefix, b))
        else:
            self.passes += 1
        full_ids = torch.cat([torch.tensor([prefix.ids], device=self.device).expand(b, -1), ids], dim=1)
        return torch.cat([prefix.hidden.expand(b, -1, -1), hidden], dim=1), full_ids, mask

    def _generate(self, frame: FrameFeatures, query: str, timer: Timer) -> Reasoning:
        """Greedy answer from the prefilled prompt; [SEG]/[KEY] are read from the generated ids and the
        hidden states generation computed. An answer without [SEG] falls back to the forced template
        from the same prefilled prompt (the free text is still returned)."""
        prefix_ids, rest = self._prompt(query, [])
        prefix = self._prefix(frame, prefix_ids, timer)
        embed = self.model.llava.get_input_embeddings()
        with timer("llm_prefill"):
            cache = self._cache_for(prefix, 1)
            rest_t = torch.tensor([rest], device=self.device)
            hidden = [prefix.hidden, self._language_model(embed(rest_t), torch.ones((1, len(prefix_ids) + len(rest)),
                                                                                      device=self.device), cache)]
        prompt_len = len(prefix_ids) + len(rest)
        ids = prefix_ids + rest
        generated: list[int] = []
        with timer("generate"):
            for _ in range(self.max_new_tokens):
                token = int(self.model.lm_logits(hidden[-1][:, -1]).argmax(dim=-1))
                if token in self._stop_ids:
                    break
                generated.append(token)
                self.steps += 1
                step = torch.tensor([[token]], device=self.device)
                hidden.append(self._language_model(embed(step), torch.ones((1, prompt_len + len(generated)),
                                                                             device=self.device), cache))
        text = self.processor.tokenizer.decode(generated, skip_special_tokens=False)
        if self.processor.ids.seg in generated:
            all_ids, all_hidden = ids + generated, torch.cat(hidden, dim=1)
        else:  # the forced answer after the same prompt: the cache is cut back to the prompt
            with timer("llm_prefill"):
                cache = DynamicCache(ddp_cache_data=[(layer.keys[:, :, :prompt_len], layer.values[:, :, :prompt_len])
                                                     for layer in cache.layers], config=self._lm_config())
                forced = self.processor.answer_ids(self.model.config.answer)
                forced_t = torch.tensor([forced], device=self.device)
                tail = self._language_model(embed(forced_t), torch.ones((1, prompt_len + len(forced)),
                                                                          device=self.device), cache)
            all_ids, all_hidden = ids + forced, torch.cat(hidden[:2] + [tail], dim=1)
        with timer("fusion"):
            ids_t = torch.tensor([all_ids], device=self.device)
            reasoned = self.model.fuse(all_hidden, ids_t, torch.ones_like(ids_t, dtype=torch.bool))
            return self._reasoning(reasoned, 0, query, text, frame.image_hw, frame.sight, frame.visible)

    def _eos_ids(self) -> set[int]:
        ids = {self.processor.ids.eos}
        configured = getattr(getattr(self.model.llava, "generation_config", None), "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(int(i) for i in configured)
        return ids

    def _reasoning(self, reasoned: Reasoned, i: int, query: str, generated: str | None,
                   frame_hw: tuple[int, int], sight: torch.Tensor | None = None,
                   visible: torch.Tensor | None = None) -> Reasoning:
        """Sample i's S_hat prompts and first [KEY] keyword -> Reasoning. With the gate and the frame's
        (P, K) sight and (K,) visibility, the prompts are the gated categories' codebook rows and the keyword names the
        first [SEG]'s category (mask and keyword name the same object)."""
        rows = reasoned.seg_batch == i
        prompts = reasoned.prompts[rows]
        seg_hidden = reasoned.seg_hidden[rows] if reasoned.seg_hidden is not None else None
        keys = (reasoned.key_batch == i).nonzero().flatten()
        top, keyword, prob = [], "", 0.0
        mass, instances, categories = None, [], []
        use_gate = self.gate is not None and visible is not None and prompts.shape[0] > 0
        if keys.numel() and not use_gate:  # gated, the keyword names the first [SEG]'s category instead
            top = decode_keywords(reasoned.keyword_logits[keys[0]], self.keyword_candidates, self._candidate_ids,
                                  self.model.config.keyword.top_k)
            keyword, prob = top[0].text, top[0].prob
        if use_gate:
            codebook = self.model.fusion.codebook
            gated = self.gate.choose(reasoned.prompt_logits[rows], visible, codebook)
            choices = gated
            if self.gate.ranker is not None and sight is not None and seg_hidden is not None:
                choices = [self.gate.rerank(c, h, sight, codebook) for c, h in zip(gated, seg_hidden)]
            categories = [choices[0].index]
            prompts = torch.stack([c.prompt for c in choices]).to(prompts.dtype)
            top = self.gate.candidates(choices[0], self.model.config.keyword.top_k)
            keyword, prob, mass = top[0].text, top[0].prob, choices[0].mass
            if self.instance_share is not None:  # the gate's belief says who is an instance, the ranker who is first
                categories = self.gate.instances(replace(gated[0], index=choices[0].index), self.instance_share)
                instances = [self.gate.names[k] for k in categories]
                prompts = torch.cat([codebook[categories].to(prompts.dtype), prompts[1:]])
        return Reasoning(query=query, prompts=prompts, keyword=keyword, keyword_prob=prob, keyword_topk=top,
                         answer=self.readable(generated, keyword), frame_hw=frame_hw, category_mass=mass,
                         instance_keywords=instances, categories=categories,
                         sight=sight if self.gate is not None else None,
                         visible=visible if self.gate is not None else None,
                         seg_hidden=seg_hidden[0] if seg_hidden is not None and seg_hidden.shape[0] else None)

    def readable(self, generated: str | None, keyword: str) -> str:
        """The template's reply with the keyword (prefill), or generated text with [SEG] dropped and
        [KEY] replaced by the keyword (generate)."""
        template = self.model.config.template
        if generated is None:
            return template.reply.format(keyword=keyword) if keyword else template.reply_no_key
        text = generated.replace(SEG_TOKEN, "").replace(KEY_TOKEN, keyword)
        return " ".join(text.split()).replace(" .", ".").replace(" ,", ",")
