"""LISA's training recipe: its question/answer lists per data kind, VQA conversations in the mixture,
the shipped 9:3:3:1 config, and the LISA-exact ablation row and head widths of the registry."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from train_fixtures import write_reasonseg

from keyseg_core.config.files import deep_merge
from keyseg_core.config.model import KeySegConfig
from keyseg_core.data.templates import ANSWERS, LONG_QUESTIONS, SHORT_QUESTIONS, lisa_answer, lisa_question
from keyseg_core.modeling.build import build_model, registry_config
from keyseg_core.train.stage2.config import TrainConfig
from keyseg_core.train.stage2.data import Collator, TrainStream, open_sources

CONFIGS = Path(__file__).resolve().parents[2] / "recipes"


def test_question_lists_by_kind():
    rng = np.random.default_rng(0)
    long = {lisa_question("reasoning", " What keeps food cold? ", True, rng) for _ in range(20)}
    assert long == {t.format(sent="What keeps food cold?") for t in LONG_QUESTIONS}
    for kind, is_sentence in (("reasoning", False), ("semantic", False), ("referring", False)):
        short = {lisa_question(kind, "The Left Dog", is_sentence, rng) for _ in range(40)}
        assert short == {t.format(class_name="the left dog") for t in SHORT_QUESTIONS}
    assert {lisa_answer(rng) for _ in range(40)} == {" " + a for a in ANSWERS}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """ReasonSeg (LISA phrasing, no keywords) + a two-record LLaVA-Instruct VQA source, tiny model."""
    root = tmp_path_factory.mktemp("recipe")
    write_reasonseg(root, "train", {"lamp": {"box": (4, 4, 14, 12), "text": ["What gives light here?"]}})
    images = root / "coco" / "train2017"
    images.mkdir(parents=True)
    Image.fromarray(np.full((20, 24, 3), 120, np.uint8)).save(images / "a.jpg")
    vqa = [{"id": str(i), "image": "a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A grey card."},
        {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "It is flat."}]} for i in range(2)]
    (root / "llava_dataset").mkdir()
    (root / "llava_dataset" / "llava_instruct_150k.json").write_text(json.dumps(vqa))
    config = TrainConfig.from_dict({
        "model": "tiny", "seed": 3, "samples_per_epoch": 16,
        "data": [{"name": "reasonseg", "root": str(root), "ratio": 1, "keyword": "optional", "questions": "lisa"},
                 {"name": "vqa", "root": str(root), "split": "llava_instruct_150k", "ratio": 3, "keyword": "none"}],
    })
    model_config = config.model_config()
    opened = open_sources(config, model_config, skip_bad=False)
    stream = TrainStream(opened, config.data, config.samples_per_epoch, config.seed, model_config.fusion.use_key)
    return config, model_config, stream


def test_stream_phrases_like_lisa_and_carries_vqa_turns(mixed):
    _, _, stream = mixed
    items = [stream[p] for p in range(16)]
    seg = [it for it in items if it.source == "reasonseg"]
    vqa = [it for it in items if it.source == "vqa"]
    assert seg and vqa and len(vqa) > len(seg)  # ratio 3:1
    for it in seg:
        assert it.query in {t.format(sent="What gives light here?") for t in LONG_QUESTIONS}
        assert it.answer in {" " + a for a in ANSWERS} and it.keyword is None
    for it in vqa:
        assert (it.query, it.answer, it.follow_ups) == ("What is it?", " A grey card.", [("Why?", "It is flat.")])
    again = [stream[p] for p in range(16)]
    assert [(a.query, a.answer) for a in again] == [(a.query, a.answer) for a in items]  # a function of (seed, p)


def test_mixed_batch_trains(mixed):
    _, model_config, stream = mixed
    model, processor = build_model(model_config)
    items = [stream[p] for p in range(16)]
    pick = [next(it for it in items if it.source == "reasonseg"), next(it for it in items if it.source == "vqa")]
    batch = Collator(processor, model_config)(pick).batch
    assert [m.shape[0] for m in batch.gt_masks] == [1, 0]
    out = model(batch)
    assert [m.shape[0] for m in out.mask_logits] == [1, 0] and out.loss.isfinite()
    out.loss.backward()


def test_shipped_config_is_lisas_9_3_3_1_mix():
    config = TrainConfig.from_file(CONFIGS / "keyseg_reasonseg.yaml")
    kind = {"coco": "sem", "refcoco": "refer", "refcoco+": "refer", "refcocog": "refer", "vqa": "vqa",
            "reasonseg": "reason"}
    totals: dict[str, float] = {}
    for source in config.data:
        totals[kind[source.name]] = totals.get(kind[source.name], 0) + source.ratio
        assert source.questions == ("plain" if source.name == "vqa" else "lisa"), source.name
    assert totals == {"sem": 9, "refer": 3, "vqa": 3, "reason": 1}


def test_seg_only_ablation_is_lisas_computation():
    model_config = TrainConfig.from_file(CONFIGS / "ablations" / "seg_only.yaml").model_config()
    assert (model_config.fusion.preset, model_config.fusion.space) == ("seg_only", "llm")
    tiny = deep_merge(registry_config("tiny").to_dict(), {"fusion": {"preset": "seg_only", "space": "llm"}})
    model, _ = build_model(KeySegConfig.from_dict(tiny))
    shapes = {n: tuple(p.shape) for n, p in model.fusion.named_parameters()}
    d = model.llava.config.text_config.hidden_size
    # exactly LISA's text_hidden_fcs: Linear(d, d) -> ReLU -> Linear(d, prompt width), nothing else
    assert shapes == {"mlp.0.weight": (d, d), "mlp.0.bias": (d,), "mlp.2.weight": (model.sam.prompt_dim, d),
                      "mlp.2.bias": (model.sam.prompt_dim,)}


@pytest.mark.parametrize("name", ["llava7b-sam-h", "llava7b-sam-h-random"])
def test_7b_fusion_heads_are_32_wide(name):
    config = registry_config(name)
    assert config.fusion.space == "prompt" and 256 // config.fusion.num_heads == 32
