"""Stage 1's batched computation and its scene sources: the same masks, scenes and errors as the slow paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from keyseg_core.cli import app as cli
from keyseg_core.modeling.build import build_model
from keyseg_core.modeling.sam import postprocess_masks, preprocess_sam
from keyseg_core.scenes import SceneConfig, load_knowledge, make_sample
from keyseg_core.train.stage1 import scene_source
from keyseg_core.train.stage1.config import BasesConfig
from keyseg_core.train.stage1.loop import StageOne, StageOneHeads, fit_steps, prompt_generator
from keyseg_core.train.stage1.scene_source import SceneSource, prepare_many, prepare_scene

TRAINABLE = {"trainable": {"vision_tower": True, "sam_image_encoder": True, "sam_prompt_encoder": True}}


def _config(**overrides) -> BasesConfig:
    data = {"model": "tiny", "model_overrides": TRAINABLE, "scene_size": [128, 96], "objects": [2, 4], **overrides}
    from keyseg_core.config.schema import build_dataclass

    return build_dataclass(BasesConfig, data)


@pytest.fixture(scope="module")
def stage():
    config = _config()
    model, processor = build_model(config.model_config())
    names = sorted(load_knowledge().categories)
    torch.manual_seed(0)
    return StageOne(model.eval(), processor, StageOneHeads.for_model(model, len(names)), names, config)


def test_batched_decoding_gives_the_per_image_masks(stage):
    """All prompts of all scenes in one decoder call == SamSegmenter.decode scene by scene."""
    scenes = [prepare_scene(stage.spec("test", 3), i) for i in range(4)]
    assert len({len(s.categories) for s in scenes}) > 1  # padding rows are exercised
    batch = stage.stack(scenes)
    sam = stage.model.sam
    with torch.no_grad():
        embeddings = sam.encode(batch.sam_pixels)
        batched = stage.decode(embeddings, stage.heads.prompt(batch.categories)[:, :, None, :], batch)
        for b, scene in enumerate(scenes):
            low, _ = sam.decode(embeddings[b:b + 1], stage.heads.prompt(torch.tensor(scene.categories)))
            alone = postprocess_masks(low, batch.resized_hw, batch.original_hw, sam.image_size)
            torch.testing.assert_close(batched[b, :len(scene.categories)], alone, atol=1e-5, rtol=1e-5)


def test_stacked_pixels_equal_the_inference_preprocessing(stage):
    spec = stage.spec("test", 3)
    scenes = [prepare_scene(spec, i) for i in range(2)]
    images = [make_sample(3, "test", i, spec.scene_config()).scene.image for i in range(2)]
    batch = stage.stack(scenes)
    want_sam = torch.stack([preprocess_sam(img, stage.model.sam.image_size).pixels for img in images])
    want_clip = torch.stack([stage.processor.preprocess_clip(img) for img in images])
    assert torch.equal(batch.sam_pixels, want_sam) and torch.equal(batch.clip_pixels, want_clip)


def test_padding_rows_and_undrawn_rows_stay_out_of_the_loss(stage):
    scenes = [prepare_scene(stage.spec(), i) for i in range(3)]
    batch = stage.stack(scenes)
    _, ious = stage.losses(batch, prompt_generator(torch.device("cpu"), 1, 2))
    assert ious["category"].numel() == sum(len(s.categories) for s in scenes)
    assert ious["box"].numel() < ious["category"].numel()  # box prompts drawn with chance 0.5


def test_prepared_scenes_are_make_sample_scenes(stage):
    spec = stage.spec("train", 100)
    for index in (0, 5):
        sample = make_sample(100, "train", index, SceneConfig(128, 96, 2, 4))
        scene = prepare_scene(spec, index)
        assert np.array_equal(scene.labels, sample.scene.labels)
        assert scene.categories == [stage.category_names.index(o.category) for o in sample.scene.objects]
        flipped = scene.flipped()
        assert np.array_equal(flipped.labels, scene.labels[:, ::-1]) and flipped.categories == scene.categories


def test_workers_pool_and_stream_give_the_same_scenes(stage):
    spec = stage.spec()
    alone = prepare_many(spec, 3, 6, workers=0)
    parallel = prepare_many(spec, 3, 6, workers=2, chunk=2)
    assert all(np.array_equal(a.labels, b.labels) and np.array_equal(a.sam_rgb, b.sam_rgb) for a, b in zip(alone, parallel))
    # stream: step s holds scenes s*B..s*B+B-1, whether workers prepare them ahead or not
    inline = list(SceneSource(spec, 2, seed=5, workers=0).batches(1, 3))
    ahead = list(SceneSource(spec, 2, seed=5, workers=2).batches(1, 3))
    assert [len(b) for b in ahead] == [2, 2]
    for x, y in zip(sum(inline, []), sum(ahead, [])):
        assert np.array_equal(x.labels, y.labels)
    assert np.array_equal(inline[0][0].labels, prepare_scene(spec, 2).labels)
    # pool: scenes 0..N-1, drawn by (seed, step): the same draw every time, from the same pool by any worker count
    a, b = SceneSource(spec, 4, seed=5, pool=6, workers=0), SceneSource(spec, 4, seed=5, pool=6, workers=2)
    assert all(np.array_equal(p.labels, q.labels) for p, q in zip(a.pool, prepare_many(spec, 0, 6, 0)))
    for step in (0, 7):
        for p, q in zip(a.batch(step), b.batch(step)):
            assert np.array_equal(p.labels, q.labels) and np.array_equal(p.clip_rgb, q.clip_rgb)
    drawn = [s.labels for step in range(5) for s in a.batch(step)]
    pool_labels = [s.labels for s in a.pool]
    assert any(not any(np.array_equal(d, p) for p in pool_labels) for d in drawn)  # some were flipped


def test_a_pool_larger_than_memory_is_refused_before_training(stage, monkeypatch):
    monkeypatch.setattr(scene_source, "available_memory", lambda: 10 * 2**20)
    with pytest.raises(ValueError, match="pool: 1000 scenes need"):
        SceneSource(stage.spec(), 2, seed=0, pool=1000)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_refused_by_name(tmp_path, capsys):
    from test_bases import write_bases_config

    config = write_bases_config(tmp_path / "b.yaml", tmp_path / "out")
    assert cli.main(["pretrain", "--config", str(config), "--device", "cuda", "--no-progress"]) == 2
    assert "device: 'cuda' but this torch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="device: 'gpu'"):
        _config(device="gpu")
    with pytest.raises(ValueError, match="precision: 'fp16'"):
        _config(precision="fp16")


def test_time_budget_fits_the_steps():
    config = _config(max_steps=1000)
    assert fit_steps(config, 20, 0.5, 100.0) == 20 + 190
    assert fit_steps(config, 20, 0.001, 100.0) == 1000  # never beyond max_steps
    assert fit_steps(config, 20, 10.0, 1.0) == 20


def test_stage_two_refuses_bases_of_another_encoder(tmp_path, capsys):
    from test_bases import write_bases_config
    from train_fixtures import write_config, write_reasonseg

    bases = write_bases_config(tmp_path / "b.yaml", tmp_path / "bases", max_steps=1, save_every=1,
                               model_overrides={**TRAINABLE, "sam": {"encoder": "cnn"}})
    assert cli.main(["pretrain", "--config", str(bases), "--no-progress"]) == 0
    write_reasonseg(tmp_path / "data", "train", {"lamp": {"box": (4, 4, 14, 12)}}, keywords={"lamp": "lamp"})
    config = write_config(tmp_path / "t.yaml", tmp_path / "data", tmp_path / "stage2", max_steps=1,
                          model_overrides=TRAINABLE, init_checkpoint=str(tmp_path / "bases" / "final"))
    assert cli.main(["train", "--config", str(config), "--no-progress"]) == 2
    assert "sam.encoder 'cnn' but this model has 'vit'" in capsys.readouterr().err


def test_bases_vouch_for_their_parts_only_so_another_llm_can_start_from_them(tmp_path):
    """Stage 1 never uses the LLM (scripts/train_gpu.sh builds it with a small random one): its
    checkpoint's fingerprint covers the tower and SAM, and a model with another LLM starts from it."""
    from test_bases import write_bases_config
    from train_fixtures import write_config, write_reasonseg

    other_llm = {**TRAINABLE, "backbone": {"llm_config": {"num_hidden_layers": 1}}}
    bases = write_bases_config(tmp_path / "b.yaml", tmp_path / "bases", max_steps=1, save_every=1,
                               model_overrides=other_llm)
    assert cli.main(["pretrain", "--config", str(bases), "--no-progress"]) == 0
    import json

    assert json.loads((tmp_path / "bases" / "final" / "meta.json").read_text())["fingerprint_parts"] == ["vision_tower.", "sam."]
    write_reasonseg(tmp_path / "data", "train", {"lamp": {"box": (4, 4, 14, 12)}}, keywords={"lamp": "lamp"})
    config = write_config(tmp_path / "t.yaml", tmp_path / "data", tmp_path / "stage2", max_steps=1,
                          model_overrides=TRAINABLE, init_checkpoint=str(tmp_path / "bases" / "final"))
    assert cli.main(["train", "--config", str(config), "--no-progress"]) == 0


def test_absent_prompts_name_a_category_the_scene_lacks_and_train_towards_no_mask(monkeypatch):
    config = _config(prompts={"point": 0.0, "box": 0.0, "category": 1.0, "absent": 1.0})
    model, processor = build_model(config.model_config())
    names = sorted(load_knowledge().categories)
    stage = StageOne(model, processor, StageOneHeads.for_model(model, len(names)), names, config)
    scenes = [prepare_scene(stage.spec(), i) for i in range(3)]
    batch = stage.stack(scenes)
    prompted = []
    real_decode = stage.decode
    monkeypatch.setattr(stage, "decode", lambda e, sparse, b: prompted.append(sparse) or real_decode(e, sparse, b))
    losses, stats = stage.losses(batch, prompt_generator(torch.device("cpu"), 0, 0))
    assert stats["absent"].shape == (3,) and ((0 <= stats["absent"]) & (stats["absent"] <= 1)).all()
    absent_table = stage.heads.prompt.weight
    for b, scene in enumerate(scenes):  # the absent row's prompt is the embedding of a category not in the scene
        row = prompted[-1][b, 0, 0]
        category = int((absent_table - row).abs().sum(1).argmin())
        assert category not in scene.categories
    losses["prompt_mask"].backward()  # the empty target reaches the prompt embeddings
    assert stage.heads.prompt.weight.grad is not None


def test_presence_report_separates_by_area():
    from keyseg_core.eval.bases import presence

    present = np.linspace(0.02, 0.2, 100)
    clean = presence(present, np.zeros(50), 1.0)
    assert clean["false_positive_rate"] == 0.0 and clean["auc"] == 1.0
    noisy = presence(present, np.linspace(0.0, 0.2, 50), 1.0)
    assert 0.5 < noisy["false_positive_rate"] < 1.0 and 0.3 < noisy["auc"] < 0.7
