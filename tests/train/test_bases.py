"""`keyseg pretrain` (stage 1): losses fall on generated scenes, resume is exact, the result starts stage 2."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from keyseg_core.cli import app as cli
from keyseg_core.train.stage1.targets import category_maps, cell_targets

TRAINABLE = {"trainable": {"vision_tower": True, "sam_image_encoder": True, "sam_prompt_encoder": True}}


def write_bases_config(path, output_dir, **overrides):
    config = {
        "model": "tiny", "model_overrides": TRAINABLE, "scene_size": [128, 96], "objects": [2, 3],
        "max_steps": 4, "batch_size": 2, "optimizer": {"lr": 3e-3}, "schedule": {"warmup_steps": 1},
        "output_dir": str(output_dir), "save_every": 2, "keep_last": 2, "log_every": 1,
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("bases")
    config = write_bases_config(work / "bases.yaml", work / "run")
    assert cli.main(["pretrain", "--config", str(config), "--no-progress"]) == 0
    return work


def test_metrics_and_final_checkpoint_hold_only_stage_one_parts(run):
    rows = (run / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and "iou_point" in rows[0] and "vision_category" in rows[0]
    state = load_file(str(run / "run" / "final" / "trainable.safetensors"))
    assert state and all("vision_tower." in k or k.startswith("sam.") for k in state)
    assert any(k.startswith("sam.sam.vision_encoder.") for k in state)
    assert not any("multi_modal_projector" in k or "lora" in k or k.startswith("fusion.") for k in state)
    assert json.loads((run / "run" / "final" / "meta.json").read_text())["pretrain_steps"] == 4


def test_interrupted_plus_resume_equals_uninterrupted(run):
    config = write_bases_config(run / "resumed.yaml", run / "resumed")
    assert cli.main(["pretrain", "--config", str(config), "--stop-at", "2", "--no-progress"]) == 0
    assert cli.main(["pretrain", "--config", str(config), "--no-progress"]) == 2  # refuses without --resume
    assert cli.main(["pretrain", "--config", str(config), "--resume", "--no-progress"]) == 0
    a = load_file(str(run / "run" / "final" / "trainable.safetensors"))
    b = load_file(str(run / "resumed" / "final" / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage_two_starts_from_the_bases(run, tmp_path):
    from train_fixtures import write_config, write_reasonseg

    write_reasonseg(tmp_path / "data", "train", {"lamp": {"box": (4, 4, 14, 12)}}, keywords={"lamp": "lamp"})
    config = write_config(tmp_path / "train.yaml", tmp_path / "data", tmp_path / "stage2", max_steps=1,
                          model_overrides=TRAINABLE, init_checkpoint=str(run / "run" / "final"))
    assert cli.main(["train", "--config", str(config), "--no-progress", "--stop-at", "1"]) == 0
    # the step-1 weights moved away from the bases, but started from them: compare a frozen-in-stage-2-free part
    bases = load_file(str(run / "run" / "final" / "trainable.safetensors"))
    fresh = load_file(str(tmp_path / "stage2" / "checkpoints" / "step_000001" / "model" / "trainable.safetensors"))
    name = next(k for k in bases if k.endswith("class_embedding"))
    assert torch.allclose(bases[name], fresh[name], atol=0.05) and not torch.equal(bases[name], fresh[name])


def test_frozen_stage_one_part_is_refused(tmp_path, capsys):
    config = write_bases_config(tmp_path / "bad.yaml", tmp_path / "out", model_overrides={})
    assert cli.main(["pretrain", "--config", str(config)]) == 2
    assert "trainable.vision_tower" in capsys.readouterr().err


def test_cell_targets_follow_each_frame():
    labels = torch.zeros((1, 4, 8), dtype=torch.long)
    labels[:, :, :4] = 1  # object 1 (category 2) fills the left half
    cats = category_maps(labels, torch.tensor([[2]]))
    assert cats.tolist()[0][0] == [3, 3, 3, 3, 0, 0, 0, 0]
    sam = cell_targets(cats, 4, 2, "sam", 8)[0]  # 4x8 -> top-left of 8x8, padding background
    assert sam[0].tolist() == [0.0, 0.0, 0.0, 1.0] and sam[2].tolist() == [1.0, 0.0, 0.0, 0.0]
    pad = cell_targets(cats, 4, 2, "pad", 0)[0]  # centred in 8x8: rows 2..5
    assert pad[0].tolist() == pytest.approx([0.5, 0.0, 0.0, 0.5])
    crop = cell_targets(cats, 4, 2, "crop", 0)[0]  # centre 4x4: columns 2..5, object in its left half
    assert crop[0].tolist() == [0.0, 0.0, 0.0, 1.0] and crop[1].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_cell_targets_of_a_batch_are_each_scenes_own():
    labels = torch.zeros((2, 4, 8), dtype=torch.long)
    labels[0, :, :4] = 1
    labels[1, :, 4:] = 2  # scene 1: its second object (category 0) on the right; padding row 0 unused
    cats = category_maps(labels, torch.tensor([[2, 0], [1, 0]]))
    assert cats[1, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    both = cell_targets(cats, 4, 2, "crop", 0)
    alone = [cell_targets(cats[i:i + 1], 4, 2, "crop", 0)[0] for i in range(2)]
    assert torch.equal(both[0], alone[0]) and torch.equal(both[1], alone[1])


@pytest.mark.parametrize("preset", ["keyseg", "seg_only"])  # seg_only has no [KEY]: anchored all the same
def test_stage_two_anchors_prompts_on_the_category_embeddings(run, tmp_path, preset):
    import csv

    from train_fixtures import write_config, write_reasonseg

    heads = run / "run" / "heads.safetensors"
    assert heads.is_file()  # written beside final/
    write_reasonseg(tmp_path / "data", "train", {"cup": {"box": (4, 4, 14, 12)}}, keywords={"cup": "cup"})
    config = write_config(tmp_path / "train.yaml", tmp_path / "data", tmp_path / "stage2", max_steps=1,
                          model_overrides={**TRAINABLE, "fusion": {"preset": preset}},
                          init_checkpoint=str(run / "run" / "final"), prompt_anchors=str(heads),
                          prompt_anchor_weight=1.0)
    assert cli.main(["train", "--config", str(config), "--no-progress"]) == 0
    row = next(csv.DictReader(open(tmp_path / "stage2" / "metrics.csv")))
    assert float(row["anchor"]) > 0


def test_anchor_loss_is_zero_on_the_anchor_and_skips_unknown_keywords():
    from keyseg_core.train.stage2.anchors import PromptAnchors

    table = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    anchors = PromptAnchors(table, ["cup", "bed"])
    seg_batch = torch.tensor([0, 1, 2])
    keywords = ["bed", "lamp", None]  # sample 1's keyword has no anchor, sample 2 has none at all
    on = torch.stack([table[1], torch.zeros(2), torch.zeros(2)])
    assert anchors.loss(on, seg_batch, keywords).item() == 0.0
    off = on + torch.tensor([[1.0, 0.0], [9.0, 9.0], [9.0, 9.0]])
    assert anchors.loss(off, seg_batch, keywords).item() == pytest.approx(0.5 / table.pow(2).mean().item())


@pytest.fixture(scope="module")
def codebook_run(run, tmp_path_factory):
    """Stage 2 (one step) of a codebook model from the stage-1 run, its codebook seeded by the prompts."""
    from train_fixtures import write_config, write_reasonseg

    work = tmp_path_factory.mktemp("codebook")
    heads = run / "run" / "heads.safetensors"
    write_reasonseg(work / "data", "train", {"cup": {"box": (4, 4, 14, 12)}}, keywords={"cup": "cup"})
    table = load_file(str(heads))["prompt.weight"]
    config = write_config(work / "train.yaml", work / "data", work / "stage2", max_steps=1,
                          model_overrides={**TRAINABLE, "fusion": {"preset": "keyseg", "codebook": table.shape[0]}},
                          init_checkpoint=str(run / "run" / "final"), prompt_anchors=str(heads),
                          prompt_anchor_weight=1.0)
    assert cli.main(["train", "--config", str(config), "--no-progress"]) == 0
    return work / "stage2" / "final", table


def test_kind_scenes_train_a_codebook_with_shared_anchors(run, tmp_path):
    """A stage 2 whose data mixes ReasonSeg records with generated "all the <kind>" samples runs, and
    the anchor loss sees them (a tenth of an epoch of scenes-all: the first step draws some)."""
    import csv

    from train_fixtures import write_config, write_reasonseg

    heads = run / "run" / "heads.safetensors"
    write_reasonseg(tmp_path / "data", "train", {"cup": {"box": (4, 4, 14, 12)}}, keywords={"cup": "cup"})
    data = [{"name": "reasonseg", "root": str(tmp_path / "data"), "split": "train", "ratio": 1.0},
            {"name": "scenes-all", "split": "train", "ratio": 20.0, "options": {"length": 8, "seed": 11}}]
    config = write_config(tmp_path / "train.yaml", tmp_path / "data", tmp_path / "stage2", max_steps=1, data=data,
                          model_overrides={**TRAINABLE, "fusion": {"preset": "keyseg", "codebook": 60}},
                          init_checkpoint=str(run / "run" / "final"), prompt_anchors=str(heads),
                          prompt_anchor_weight=1.0)
    assert cli.main(["train", "--config", str(config), "--no-progress"]) == 0
    row = next(csv.DictReader(open(tmp_path / "stage2" / "metrics.csv")))
    assert float(row["anchor"]) > 0
    vocabulary = json.loads((tmp_path / "stage2" / "final" / "config.json").read_text())["keyword"]["vocabulary"]
    assert "cup" in vocabulary and not {"container", "fruit", "vehicle"} & set(vocabulary)  # kinds: no candidates


def test_stage_two_seeds_a_new_codebook_with_the_category_prompts(codebook_run):
    final, table = codebook_run
    codebook = load_file(str(final / "trainable.safetensors"))["fusion.codebook"]
    assert ((codebook - table).norm() / table.norm()).item() < 0.01  # one small step from the prompts


def test_attach_detector_gives_the_stage_one_tower_and_patch_head(run, codebook_run, tmp_path, capsys):
    """`keyseg attach-detector`: the detector is the stage-1 tower and patch head, the predictor gates with it."""
    import shutil

    from keyseg_core.modeling.category_detector import DETECTOR_FILE, CategoryDetector
    from keyseg_core.runtime.predictor import Predictor
    from keyseg_core.scenes import load_knowledge, make_sample

    final, _ = codebook_run
    ckpt = tmp_path / "ckpt"
    shutil.copytree(final, ckpt)
    args = ["attach-detector", "--bases", str(run / "run"), "--checkpoint", str(ckpt), "--no-progress"]
    # four stage-1 steps teach the tower nothing: its visibility does not rise with presence, and the
    # calibration (fitted on generated val scenes, before anything is written) says so
    assert cli.main(args + ["--calibration-scenes", "4"]) == 2
    assert "visibility calibration: the fit gave a = " in capsys.readouterr().err
    assert not (ckpt / DETECTOR_FILE).exists()
    args += ["--calibration-scenes", "0"]
    assert cli.main(args) == 0
    detector = CategoryDetector.load(ckpt / DETECTOR_FILE)
    assert detector.tiles == 0.6 and detector.calibration == (1.0, 0.0)
    assert detector.names == sorted(load_knowledge().categories)
    bases = load_file(str(run / "run" / "final" / "trainable.safetensors"))
    tower = {k.split("vision_tower.", 1)[1]: v for k, v in bases.items() if "vision_tower." in k}
    for name, value in detector.tower.state_dict().items():
        assert torch.allclose(value, tower[name].half().float()), name
    heads = load_file(str(run / "run" / "heads.safetensors"))
    assert torch.allclose(detector.patch.weight, heads["patch.weight"].half().float())
    sample = make_sample(3, "test", 0, kb=load_knowledge())
    pred = Predictor.from_pretrained(str(ckpt)).predict(sample.scene.image, sample.queries[0].text)
    assert pred.keyword in detector.names and 0.0 <= pred.category_mass <= 1.0
    capsys.readouterr()
    assert cli.main(args) == 2  # never overwritten without --overwrite
    assert "exists; pass --overwrite" in capsys.readouterr().err
    from keyseg_core.modeling.geometry_ranker import RANKER_FILE, GeometryRanker

    GeometryRanker(8).save(ckpt / RANKER_FILE)  # a ranker fitted on the old detector's maps: said so
    assert cli.main(args + ["--overwrite"]) == 0
    assert f"{RANKER_FILE} was fitted on the previous detector's maps" in capsys.readouterr().out
    assert cli.main(["attach-detector", "--bases", str(run / "run"), "--checkpoint", str(run / "run" / "final")]) == 2
    assert "has fusion.codebook 0" in capsys.readouterr().err
    assert cli.main(["attach-detector", "--bases", str(tmp_path), "--checkpoint", str(ckpt), "--overwrite"]) == 2
    assert "final/config.json does not exist" in capsys.readouterr().err
    assert cli.main(args + ["--overwrite", "--tiles", "1.5"]) == 2
    assert "--tiles: 1.5 must be 0 (none) or a fraction in (0, 1)" in capsys.readouterr().err


def test_a_codebook_fusion_is_anchored_by_cross_entropy_and_seeded_from_the_anchors():
    from keyseg_core.train.stage2.anchors import PromptAnchors

    table = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    anchors = PromptAnchors(table, ["cup", "bed"])
    logits = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    loss = anchors.loss(torch.zeros(2, 2), torch.tensor([0, 1]), ["bed", "lamp"], logits)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits[:1], torch.tensor([1])).item())
    codebook = torch.zeros(2, 2)
    anchors.seed_codebook(codebook)
    assert torch.equal(codebook, table)
    with pytest.raises(ValueError, match="fusion.codebook: 3 prompts of width 2, but prompt_anchors has 2"):
        anchors.seed_codebook(torch.zeros(3, 2))


def test_eval_bases_prompts_every_object_of_the_split_from_either_layout(run, capsys):
    from keyseg_core.scenes import SceneConfig, make_sample

    config = str(run / "bases.yaml")
    base = ["eval-bases", "--config", config, "--split", "test", "--seed", "3", "--scenes", "3", "--no-progress"]
    assert cli.main(base + ["--json", str(run / "final.json")]) == 0
    assert "| category | 1 |" in capsys.readouterr().out
    final = json.loads((run / "final.json").read_text())
    drawn = sum(len(make_sample(3, "test", i, SceneConfig(128, 96, 2, 3)).scene.objects) for i in range(3))
    assert final["objects"] == drawn == sum(final["objects_by_size"].values())
    assert final["pretrain_steps"] == 4 and set(final["prompts"]) == {"point", "box", "category"}
    assert all(0.0 <= row["mean_iou"] <= 1.0 for row in final["prompts"].values())
    assert final["presence"]["absent_prompts"] == 3 and 0.0 <= final["presence"]["auc"] <= 1.0
    # a step checkpoint holds model/ and its heads inside: the same weights give the same numbers
    step = run / "run" / "checkpoints" / "step_000004"
    assert cli.main(base + ["--checkpoint", str(step), "--json", str(run / "step.json")]) == 0
    assert json.loads((run / "step.json").read_text())["prompts"] == final["prompts"]


def test_eval_bases_names_what_is_missing(run, tmp_path, capsys):
    import shutil

    config = str(run / "bases.yaml")
    assert cli.main(["eval-bases", "--config", config, "--split", "dev", "--no-progress"]) == 2
    assert "unknown split 'dev'" in capsys.readouterr().err
    shutil.copytree(run / "run" / "final", tmp_path / "lone" / "final")  # no heads.safetensors beside it
    assert cli.main(["eval-bases", "--config", config, "--checkpoint", str(tmp_path / "lone" / "final")]) == 2
    assert "heads.safetensors: missing" in capsys.readouterr().err
    assert cli.main(["eval-bases", "--config", config, "--checkpoint", str(tmp_path)]) == 2
    assert "not a stage-1 checkpoint" in capsys.readouterr().err


def test_rebuild_bases_recovers_a_stage_one_run_from_a_gated_checkpoint(run, codebook_run, tmp_path, capsys):
    """`keyseg rebuild-bases`: SAM exactly as the checkpoint holds it, the tower and patch head of its
    detector, a category prompt table fitted again on the frozen SAM; the result starts stage 2 and
    eval-bases like a stage-1 run. Existing runs and checkpoints without a detector are refused."""
    import shutil

    from keyseg_core.modeling.category_detector import DETECTOR_FILE, CategoryDetector

    final, _ = codebook_run
    ckpt = tmp_path / "ckpt"
    shutil.copytree(final, ckpt)
    config = write_bases_config(tmp_path / "rebuild.yaml", tmp_path / "rebuilt")
    args = ["rebuild-bases", "--config", str(config), "--checkpoint", str(ckpt), "--steps", "3", "--batch-size", "2",
            "--no-progress"]
    assert cli.main(args) == 2  # no detector yet
    assert f"{DETECTOR_FILE} does not exist" in capsys.readouterr().err
    assert cli.main(["attach-detector", "--bases", str(run / "run"), "--checkpoint", str(ckpt),
                     "--calibration-scenes", "0", "--no-progress"]) == 0
    assert cli.main(args) == 0
    rebuilt = load_file(str(tmp_path / "rebuilt" / "final" / "trainable.safetensors"))
    source = load_file(str(ckpt / "trainable.safetensors"))
    sam = [k for k in rebuilt if k.startswith("sam.")]
    assert sam and all(torch.equal(rebuilt[k], source[k]) for k in sam)
    detector = CategoryDetector.load(ckpt / DETECTOR_FILE)
    tower = {k.split("vision_tower.", 1)[1]: v for k, v in rebuilt.items() if "vision_tower." in k}
    assert tower.keys() == detector.tower.state_dict().keys()
    assert all(torch.equal(v, tower[k]) for k, v in detector.tower.state_dict().items())
    heads = load_file(str(tmp_path / "rebuilt" / "heads.safetensors"))
    original = load_file(str(run / "run" / "heads.safetensors"))
    assert torch.equal(heads["patch.weight"], detector.patch.weight)
    assert heads["prompt.weight"].shape == original["prompt.weight"].shape
    from keyseg_core.train.stage1.loop import StageOneHeads

    torch.manual_seed(42)  # the recipe's seed draws the table's start, as stage 1 drew it; three Adam steps move it
    start = StageOneHeads(heads["patch.weight"].shape[1], heads["prompt.weight"].shape[1], 60).prompt.weight
    moved = (heads["prompt.weight"] - start).abs().max().item()
    assert 0 < moved <= 3 * 0.01 * 1.01
    summary = json.loads((tmp_path / "rebuilt" / "summary.json").read_text())
    assert summary["prompt_fit_steps"] == 3 and summary["rebuilt_from"] == str(ckpt)
    assert not (tmp_path / ".rebuilt.partial").exists()  # written aside, then renamed into place
    # it reads as a stage-1 run: eval-bases scores it, attach-detector takes its tower back unchanged
    assert cli.main(["eval-bases", "--config", str(config), "--checkpoint", str(tmp_path / "rebuilt" / "final"),
                     "--scenes", "2", "--no-progress"]) == 0
    again = CategoryDetector.from_stage1(tmp_path / "rebuilt", detector.names)
    assert all(torch.equal(v, again.tower.state_dict()[k]) for k, v in detector.tower.state_dict().items())
    capsys.readouterr()
    assert cli.main(args) == 2  # never into an existing run
    assert "already exists" in capsys.readouterr().err
