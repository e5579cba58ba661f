"""The instruction model that proposes a keyword per sample (paper sec. 4.2: FLAN-T5 with the
prompt below). Any local causal instruction model works too (e.g. the offline SmolLM2): it gets
the same prompt through its chat template. Decoding is greedy, so reruns and resumed runs agree."""

from __future__ import annotations

import re

PROMPT = "Extract the most important object from the following text as a single word or short noun phrase"
# causal chat models start their answer from this prefix: small ones otherwise reply with a whole
# sentence; the closing quote they emit marks the end of the phrase
ANSWER_PREFIX = 'The most important object is "'
_QUOTED = re.compile(r"[\"\u201c\u201d]([^\"\u201c\u201d]{1,60})[\"\u201c\u201d]")
_PREFIX = re.compile(
    r"^(?:the\s+)?(?:most\s+important\s+|key\s+|main\s+)?(?:object|keyword|answer|noun phrase|word)"
    r"(?:\s+(?:in|from)\s+(?:this|the)(?:\s+given)?\s+text)?\s*(?:is|:|-)\s*",
    re.IGNORECASE,
)


def build_prompt(text: str) -> str:
    return f"{PROMPT}.\n\nText: {text.strip()}"


def parse_answer(output: str) -> str:
    """First non-empty line; a quoted phrase in it wins; 'The most important object is' style
    prefixes, surrounding quotes and end punctuation are removed."""
    line = next((ln.strip() for ln in output.splitlines() if ln.strip()), "")
    quoted = _QUOTED.search(line)
    if quoted:
        line = quoted.group(1)
    line = _PREFIX.sub("", line)
    return line.strip().strip("\"'\u201c\u201d`*").rstrip(".!?,;:").strip()


class Extractor:
    """Batched greedy generation with a seq2seq (FLAN-T5) or causal (chat template) model.

    name: a hub id ('google/flan-t5-xl'), a local directory, or 'offline:smollm2-135m-instruct'.
    """

    def __init__(self, name: str, *, device: str = "cpu", batch_size: int = 8, max_new_tokens: int = 16) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from keyseg_core.pretrained.offline_llm import resolve_pretrained

        path = resolve_pretrained(name)
        self.name = name
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.seq2seq = bool(getattr(AutoConfig.from_pretrained(path), "is_encoder_decoder", False))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model_cls = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        self.model = model_cls.from_pretrained(path).to(device).eval()
        self.device = device
        self._torch = torch
        if not self.seq2seq:
            self.tokenizer.padding_side = "left"  # generation continues from the right end
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token

    def _inputs(self, texts: list[str]) -> list[str]:
        prompts = [build_prompt(t) for t in texts]
        if self.seq2seq or not self.tokenizer.chat_template:
            return prompts
        return [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            + ANSWER_PREFIX
            for p in prompts
        ]

    def __call__(self, texts: list[str]) -> list[str]:
        """Raw decoded answers, one per text (parse with `parse_answer`)."""
        outputs: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._inputs(texts[start : start + self.batch_size])
            # a chat template already carries its special tokens; plain prompts need the tokenizer's
            templated = not self.seq2seq and bool(self.tokenizer.chat_template)
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=not templated).to(
                self.device
            )
            with self._torch.inference_mode():
                generated = self.model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            if self.seq2seq:
                outputs.extend(self.tokenizer.batch_decode(generated, skip_special_tokens=True))
                continue
            prefix = ANSWER_PREFIX if self.tokenizer.chat_template else ""
            continuations = self.tokenizer.batch_decode(
                generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
            )
            outputs.extend(prefix + c for c in continuations)
        return outputs
