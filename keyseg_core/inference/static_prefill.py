"""The reasoner's LLM passes at static shapes: transformers' `StaticCache` + one compiled forward.

The reasoner prefills a frame's prompt prefix (everything through the last image token) once and
then runs the queries' suffixes as one right-padded batch after it (`Reasoner._prefix`, `._extend`).
`StaticPrefill` runs those two passes with preallocated KV buffers, so that torch.compile (with CUDA
graphs on CUDA, mode "reduce-overhead") sees the same shapes every frame:

  prefix     (1, P): P is fixed by the prompt template and the image token count; one graph per P,
             its cache is (1, P) long and the result (hidden states, K/V) is copied out of it;
  extension  (B, S): the number of queries padded up to a BATCH_BUCKETS size (more are run in chunks
             of the largest), the longest suffix up to a SUFFIX_BUCKETS length; one graph per (B, S),
             compiled on first use. One cache per (P, B), P + max(SUFFIX_BUCKETS) long, shared by every
             S: the prefix's K/V are copied into its first P positions when the prefix changes (a new
             frame), the suffix is written after them, and the attention mask hides the rest of the
             buffer (what a longer suffix left there) and the padding. A suffix longer than the
             largest bucket gets None: the caller runs it eagerly.

The real (unpadded) positions get the hidden states of the eager DynamicCache path: the same
embeddings, position ids, and keys under the mask; padded rows and columns are dropped. The model is
only read. Calls run under inference mode; the results are copies (CUDA-graph outputs live in the
graph's memory pool), usable outside inference mode.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from transformers import StaticCache

SUFFIX_BUCKETS = (16, 32, 64, 128)
BATCH_BUCKETS = (1, 2, 4, 8)

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (batch, kv heads, length, head dim)


def cache_keyword(language_model: torch.nn.Module) -> str:
    """The keyword that passes a KV cache to the language model (`cache` in newer transformers)."""
    params = inspect.signature(language_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def bucket(n: int, buckets: tuple[int, ...]) -> int | None:
    """The smallest bucket that holds n; None when none does."""
    return next((b for b in buckets if b >= n), None)


def allow_recompiles(count: int) -> None:
    """Raise torch._dynamo's per-function recompile limit to at least `count` (never lowers it): every
    static shape is one more compiled entry of the same forward, and past the limit dynamo would run
    the forward eagerly without saying so in the result."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), count))


class StaticPrefill:
    """Prefix prefill and suffix extension of a language model through StaticCaches.

    compile_mode: None runs the forward as it is (static caches, no compiler); otherwise the
    torch.compile mode ("reduce-overhead": CUDA graphs; "default"), with `dynamo_backend` and
    `fullgraph`, at static shapes (dynamic=False). `shapes` records each (kind, batch, length, prefix)
    run so far, one compiled graph each.
    """

    def __init__(self, language_model: torch.nn.Module, *, compile_mode: str | None = None,
                 dynamo_backend: str = "inductor", fullgraph: bool = True,
                 batch_buckets: tuple[int, ...] = BATCH_BUCKETS,
                 suffix_buckets: tuple[int, ...] = SUFFIX_BUCKETS) -> None:
        self.language_model = language_model
        self.config = language_model.config
        self.batch_buckets = tuple(sorted(batch_buckets))
        self.suffix_buckets = tuple(sorted(suffix_buckets))
        self.compile_mode = compile_mode
        self._cache_kw = cache_keyword(language_model)
        params = inspect.signature(language_model.forward).parameters
        self._cache_position = "cache_position" in params  # older transformers index the cache with it
        self._prefix_caches: dict[int, StaticCache] = {}
        self._caches: dict[tuple[int, int], StaticCache] = {}
        self._loaded: dict[tuple[int, int], KV] = {}  # which prefix's K/V each cache holds now
        self.shapes: set[tuple[str, int, int, int]] = set()
        self._forward: Callable = self._run
        if compile_mode is not None:
            # one entry per extension shape and one per prefix length, with room to spare
            allow_recompiles(len(self.batch_buckets) * len(self.suffix_buckets) + 8)
            self._forward = torch.compile(self._run, mode=compile_mode, backend=dynamo_backend, dynamic=False,
                                          fullgraph=fullgraph)

    # ---- the two passes ----

    def prefill(self, embeds: torch.Tensor) -> tuple[torch.Tensor, KV]:
        """(1, P, d) prefix embeddings -> (1, P, d) last hidden states and the per-layer K/V (copies)."""
        if embeds.shape[0] != 1:
            raise ValueError(f"the prefix is prefilled for one row, got {embeds.shape[0]}")
        p = embeds.shape[1]
        with torch.inference_mode():
            cache = self._prefix_caches.get(p)
            if cache is None:
                cache = self._prefix_caches[p] = self._new_cache(1, p, embeds)
            self._rewind(cache, 0)
            mask = torch.ones((1, p), dtype=torch.long, device=embeds.device)
            positions = torch.arange(p, device=embeds.device)[None]
            self.shapes.add(("prefix", 1, p, p))
            hidden = self._forward(embeds, mask, positions, cache)
        return hidden.clone(), [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]

    def extend(self, kv: KV, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """Suffixes after the prefix `kv` (from `prefill`): (b, L, d) right-padded embeddings and the
        (b, P + L) attention mask (prefix included) -> (b, L, d) hidden states; None when L is longer
        than the largest suffix bucket."""
        b, length = embeds.shape[:2]
        p = kv[0][0].shape[2]
        if mask.shape != (b, p + length):
            raise ValueError(f"mask {tuple(mask.shape)} for {b} suffixes of {length} after a prefix of {p}")
        s = bucket(length, self.suffix_buckets)
        if s is None:
            return None
        step = self.batch_buckets[-1]
        parts = [self._extend(kv, embeds[i: i + step], mask[i: i + step], s) for i in range(0, b, step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def warm_up(self, prefix_len: int, suffix_len: int = 1, batch: int = 1, *,
                dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        """Run (so compile) the prefix and one extension shape on zeros."""
        d = self.config.hidden_size
        _, kv = self.prefill(torch.zeros((1, prefix_len, d), dtype=dtype, device=device))
        self.extend(kv, torch.zeros((batch, suffix_len, d), dtype=dtype, device=device),
                    torch.ones((batch, prefix_len + suffix_len), dtype=torch.bool, device=device))

    # ---- steps ----

    def _extend(self, kv: KV, embeds: torch.Tensor, mask: torch.Tensor, s: int) -> torch.Tensor:
        """One chunk of at most the largest batch bucket, padded to (B, s)."""
        b, length, d = embeds.shape
        p = kv[0][0].shape[2]
        batch = bucket(b, self.batch_buckets)
        total = p + self.suffix_buckets[-1]
        with torch.inference_mode():
            cache = self._caches.get((p, batch))
            if cache is None:
                cache = self._caches[p, batch] = self._new_cache(batch, total, embeds)
            if self._loaded.get((p, batch)) is not kv:  # a new prefix (frame): into the first p positions
                for layer, (k, v) in zip(cache.layers, kv):
                    layer.keys[:, :, :p].copy_(k.expand(batch, -1, -1, -1))
                    layer.values[:, :, :p].copy_(v.expand(batch, -1, -1, -1))
                self._loaded[p, batch] = kv
            self._rewind(cache, p)
            padded = embeds.new_zeros((batch, s, d))
            padded[:b, :length] = embeds
            full = torch.zeros((batch, total), dtype=torch.long, device=embeds.device)
            full[:, :p] = 1  # padded rows see the prefix only, so that no row is all masked
            full[:b, : p + length] = mask
            positions = torch.arange(p, p + s, device=embeds.device)[None]
            self.shapes.add(("extend", batch, s, p))
            hidden = self._forward(padded, full, positions, cache)
        return hidden[:b, :length].clone()

    def _run(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
             cache: StaticCache) -> torch.Tensor:
        """The forward that is compiled: one pass writing K/V at `positions`' slots of the cache."""
        extra = {"cache_position": positions[0]} if self._cache_position else {}
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                  use_cache=True, **{self._cache_kw: cache}, **extra)
        return out.last_hidden_state

    def _new_cache(self, batch: int, length: int, like: torch.Tensor) -> StaticCache:
        """A StaticCache with its buffers allocated now, outside the compiled graph (CUDA graphs need
        them at fixed addresses: transformers marks them static when allocated eagerly)."""
        config = self.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        cache = StaticCache(config=config, max_cache_len=length)
        shape = torch.zeros((batch, heads, 1, head_dim), dtype=like.dtype, device=like.device)
        for layer in cache.layers:
            layer.lazy_initialization(shape, shape)
        return cache

    @staticmethod
    def _rewind(cache: StaticCache, start: int) -> None:
        """The next write goes to slot `start` (transformers' static layers count what they hold)."""
        for layer in cache.layers:
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length.fill_(start)
