"""`keyseg train` / `keyseg eval` end to end on a ReasonSeg fixture with the tiny model (CPU, offline).

One module-scoped run of 8 steps is shared: loss goes down on a repeated sample, checkpoints rotate,
a 4-step run plus a resume gives bit-identical weights, eval scores it. A torchrun run checks that two
ranks end with identical weights.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from train_fixtures import write_config, write_reasonseg

from keyseg_core.cli import app as cli

STEPS = 8
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def keyseg(*args: str, cwd: Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh process."""
    command = (launcher or [sys.executable, "-m"]) + ["keyseg_core.cli", *args]
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=240)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"rc {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    return result


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Data (one training image, repeated; two val images) and a finished 8-step run in work/run."""
    work = tmp_path_factory.mktemp("train")
    write_reasonseg(work / "data", "train", {"lamp": {"box": (4, 4, 14, 12), "text": ["what gives light here?"]}},
                    keywords={"lamp": "lamp"})
    write_reasonseg(work / "data", "val", {"a": {"box": (4, 4, 14, 12), "text": ["first query", "second"],
                                                 "extra": {"query_type": "use", "keyword": "lamp"}},
                                           "b": {"box": (10, 8, 28, 20), "ignore": (12, 10, 14, 12),
                                                 "extra": {"query_type": "name"}}})
    config = write_config(work / "train.yaml", work / "data", work / "run", max_steps=STEPS,
                          optimizer={"lr": 1e-2}, schedule={"warmup_steps": 1, "decay": "constant"})
    ok(keyseg("train", "--config", str(config), "--no-progress", cwd=work))
    return work


def test_loss_goes_down_and_components_are_logged(work):
    rows = metrics(work / "run")
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    for r in rows:
        parts = sum(float(r[k]) * w for k, w in (("ce", 1), ("bce", 1), ("dice", 1), ("keyword", 1)))
        assert float(r["loss"]) == pytest.approx(parts, rel=1e-5)  # 'paper' preset: all weights 1
    first = np.mean([float(r["loss"]) for r in rows[:3]])
    last = np.mean([float(r["loss"]) for r in rows[-3:]])
    print(f"loss first 3 steps {first:.4f}, last 3 steps {last:.4f}")
    assert last < first - 0.05
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert summary["step"] == STEPS and summary["samples_seen"] == STEPS * 2 and summary["skipped"] == {}


def test_checkpoints_rotate_and_are_complete(work):
    folder = work / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step_000006", "step_000008"]  # keep_last 2
    state = json.loads((folder / "step_000008" / "trainer_state.json").read_text())
    assert (state["step"], state["consumed"]) == (8, 16)
    meta = json.loads((folder / "step_000008" / "model" / "meta.json").read_text())
    assert meta["train_steps"] == 8
    config = json.loads((work / "run" / "final" / "config.json").read_text())
    assert config["keyword"]["vocabulary"] == ["lamp"]  # the training keywords are the decoding candidates
    final = load_file(str(work / "run" / "final" / "trainable.safetensors"))
    last = load_file(str(folder / "step_000008" / "model" / "trainable.safetensors"))
    assert final.keys() == last.keys() and all((final[k] == last[k]).all() for k in final)


def test_interrupted_run_plus_resume_equals_uninterrupted_run(work):
    config = work / "train.yaml"
    ok(keyseg("train", "--config", str(config), "--set", "output_dir=resumed", "--stop-at", "5", "--no-progress", cwd=work))
    assert (work / "resumed" / "checkpoints" / "step_000004").is_dir()  # step 5 was lost with the 'crash'
    refused = keyseg("train", "--config", str(config), "--set", "output_dir=resumed", cwd=work)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    result = ok(keyseg("train", "--config", str(config), "--set", "output_dir=resumed", "--resume", "--no-progress", cwd=work))
    assert "step_000004 (step 4)" in result.stdout
    a = load_file(str(work / "run" / "final" / "trainable.safetensors"))
    b = load_file(str(work / "resumed" / "final" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), "resumed weights differ from the uninterrupted run"
    assert [r["loss"] for r in metrics(work / "run")] == [r["loss"] for r in metrics(work / "resumed")]


def test_two_process_ddp_run_keeps_ranks_identical(work):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    ok(keyseg("train", "--config", str(work / "train.yaml"), "--set", "output_dir=ddp", "--set", "max_steps=2",
              "--no-progress", cwd=work, launcher=launcher))
    summary = json.loads((work / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and "MULTI_CPU" in summary["engine"]
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert summary["samples_seen"] == 2 * 2 * 2 * 1  # steps x ranks x accumulation x batch
    assert sorted(p.name for p in (work / "ddp" / "checkpoints" / "step_000002").glob("rng_rank*")) == [
        "rng_rank0.safetensors", "rng_rank1.safetensors"]


def test_eval_writes_report_csv_overlays_matching_metrics(work):
    from keyseg_core.data import open_dataset
    from keyseg_core.eval.metrics import intersection_union
    from keyseg_core.runtime.predictor import Predictor

    out = work / "eval_val"
    result = ok(keyseg("eval", "--checkpoint", "run/checkpoints/step_000008", "--dataset", "reasonseg", "--split", "val",
                       "--data-root", "data", "--output", str(out), "--worst", "1", "--no-progress", cwd=work))
    assert "gIoU" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["train_steps"] == STEPS and report["untrained"] is False and report["count"] == 2
    with open(out / "per_sample.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["query"] for r in rows] == ["first query", "which thing is the b?"]  # text[0]
    # by hand: same checkpoint, same queries, keyseg_core.eval.metrics
    predictor = Predictor.from_pretrained(str(work / "run" / "checkpoints" / "step_000008" / "model"))
    dataset = open_dataset("reasonseg", work / "data", "val")
    ious, inters, unions = [], [], []
    for i, row in enumerate(rows):
        sample = dataset[i]
        inter, union = intersection_union(predictor.predict(sample.image, sample.queries[0]).mask, sample.mask)
        assert (int(row["intersection"]), int(row["union"])) == (inter, union)
        ious.append(1.0 if union == 0 else inter / union)
        inters.append(inter)
        unions.append(union)
    assert report["giou"] == pytest.approx(np.mean(ious)) and report["ciou"] == pytest.approx(sum(inters) / sum(unions))
    # a keyword only on item a: accuracy over that one item; each query type scored on its own
    assert report["keyword_count"] == 1 and report["keyword_top1"] == float(rows[0]["predicted_keyword"] == "lamp")
    by_type = report["by_query_type"]
    assert sorted(by_type) == ["name", "use"] and by_type["use"]["giou"] == pytest.approx(ious[0])
    assert by_type["name"]["count"] == 1 and "keyword_count" not in by_type["name"]
    worst = [Path(p) for p in report["worst_overlays"]]
    assert len(worst) == 1 and worst[0].is_file()
    assert rows[int(np.argmin(ious))]["id"].replace("/", "_") in worst[0].name


def test_eval_missing_image_is_named_or_counted_with_skip_bad(work, capsys):
    data = work / "data_bad"
    shutil.copytree(work / "data", data)
    missing = data / "reason_seg" / "ReasonSeg" / "val" / "b.png"
    missing.unlink()
    base = ["eval", "--checkpoint", str(work / "run" / "final"), "--dataset", "reasonseg", "--split", "val",
            "--data-root", str(data), "--no-progress", "--output", str(work / "eval_bad")]
    assert cli.main(base) == 2
    err = capsys.readouterr().err
    assert "b.json" in err and "missing_image" in err
    assert cli.main(base + ["--skip-bad"]) == 0
    report = json.loads((work / "eval_bad" / "report.json").read_text())
    assert report["count"] == 1 and report["skipped"]["by_reason"] == {"missing_image": 1}


def test_eval_unknown_split_is_named(work, capsys):
    args = ["eval", "--checkpoint", str(work / "run" / "final"), "--dataset", "reasonseg", "--split", "dev",
            "--data-root", str(work / "data")]
    assert cli.main(args) == 2
    assert "unknown split 'dev'" in capsys.readouterr().err


@pytest.mark.parametrize("checkpoint, label", [
    ("runs/a/final", "a"), ("runs/b/final/", "b"), ("runs/a/checkpoints/step_000500", "a_step_000500"),
    ("runs/a/checkpoints/step_000500/model", "a_step_000500"), ("config:tiny", "config_tiny"),
    ("HuggingFaceTB/SmolLM2-135M", "SmolLM2-135M"), ("/opt/keyseg/weights/keyseg-tiny", "keyseg-tiny"),
])
def test_eval_report_folder_names_the_run(checkpoint, label):
    """Every run ends in final/: the default report folder must not let two runs overwrite each other."""
    from keyseg_core.cli.eval import report_label

    assert report_label(checkpoint) == label


def test_eval_default_report_folder_is_the_run_name(work):
    ok(keyseg("eval", "--checkpoint", "run/final", "--dataset", "reasonseg", "--split", "val",
              "--data-root", "data", "--worst", "0", "--no-progress", cwd=work))
    assert (work / "eval" / "run" / "reasonseg_val" / "report.json").is_file()


def test_train_sample_without_keyword_is_named_or_counted_with_skip_bad(work, capsys):
    data = work / "data_nokw"
    write_reasonseg(data, "train", {"lamp": {"box": (4, 4, 14, 12)}, "cup": {"box": (2, 2, 9, 9)}},
                    keywords={"lamp": "lamp"})
    config = write_config(work / "nokw.yaml", data, work / "run_nokw", max_steps=1)
    assert cli.main(["train", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cup.json" in err and "no_keyword" in err
    assert cli.main(["train", "--config", str(config), "--no-progress", "--skip-bad"]) == 0
    summary = json.loads((work / "run_nokw" / "summary.json").read_text())
    assert summary["skipped"] == {"reasonseg": {"no_keyword": 1}}
    assert "no_keyword: 1" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "eval"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0 and "--skip-bad" in capsys.readouterr().out
