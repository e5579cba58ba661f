"""Geometry ranker: candidate geometry from the detector's patch maps, the re-ranking of the gated
top-k (never moving a confident answer), its file, fitting, and the predictor loading it."""

import json

import numpy as np
import pytest
import torch

from keyseg_core.inference.category_gate import CategoryGate, GatedChoice
from keyseg_core.modeling.geometry_ranker import (FEATURES, RANKER_FILE, GeometryRanker, candidate_features,
                                                  fit_ranker)
from keyseg_core.runtime.predictor import Predictor
from gated_model import write_gated_checkpoint
from test_category_gate import _detector

GRID = 8


def _blob(x: int, y: int, side: int) -> torch.Tensor:
    """(P,) patch map of a square object at grid cell (x, y), `side` cells wide."""
    grid = torch.zeros(GRID, GRID)
    grid[y:y + side, x:x + side] = 0.9
    return grid.flatten()


def _maps() -> torch.Tensor:
    """Three candidates: a large one on the right, a small one top left, a medium one at the bottom."""
    return torch.stack([_blob(5, 2, 3), _blob(0, 0, 1), _blob(2, 6, 2)], dim=1)  # (P, 3)


def test_features_mark_the_extremes_among_plausible_candidates_only():
    probs = torch.tensor([0.5, 0.3, 0.2])
    f = candidate_features(_maps(), probs, plausible=0.1)
    col = {name: f[:, i] for i, name in enumerate(FEATURES)}
    assert col["largest"].tolist() == [1, 0, 0] and col["smallest"].tolist() == [0, 1, 0]
    assert col["leftmost"].tolist() == [0, 1, 0] and col["rightmost"].tolist() == [1, 0, 0]
    assert col["topmost"].tolist() == [0, 1, 0] and col["bottommost"].tolist() == [0, 0, 1]
    assert float(col["log_area"].sum()) == pytest.approx(0.0, abs=1e-5) and col["log_area"][0] > col["log_area"][2]
    # the small one is implausible (under a tenth of the best belief): it is left out of every feature
    f = candidate_features(_maps(), torch.tensor([0.6, 0.05, 0.35]), plausible=0.1)
    assert f[1].abs().sum() == 0 and f[:, FEATURES.index("smallest")].tolist() == [0, 0, 1]
    # one plausible answer: nothing to choose between
    assert candidate_features(_maps(), torch.tensor([0.96, 0.02, 0.02]), plausible=0.1).abs().sum() == 0
    with pytest.raises(ValueError, match="square grid"):
        candidate_features(torch.zeros(10, 3), probs, 0.1)


def _smallest_ranker(hidden_size: int = 4) -> GeometryRanker:
    """Asks for the smallest candidate when the hidden state's first entry is positive."""
    ranker = GeometryRanker(hidden_size, top_k=3)
    with torch.no_grad():
        ranker.weight[0, FEATURES.index("smallest")] = 5.0
    return ranker


def test_gate_rerank_moves_the_answer_as_the_query_asks_and_keeps_the_mass():
    codebook = torch.arange(12.0).view(3, 4)
    gate = CategoryGate(_detector(), 3, _smallest_ranker())
    choice = GatedChoice(0, codebook[0], torch.tensor([0.5, 0.3, 0.2]), 0.8)
    asks_smallest, asks_nothing = torch.tensor([1.0, 0, 0, 0]), torch.zeros(4)
    moved = gate.rerank(choice, asks_smallest, _maps(), codebook)
    assert moved.index == 1 and torch.equal(moved.prompt, codebook[1]) and moved.mass == 0.8
    assert float(moved.probs.sum()) == pytest.approx(1.0) and int(moved.probs.argmax()) == 1
    assert gate.rerank(choice, asks_nothing, _maps(), codebook).index == 0
    confident = GatedChoice(0, codebook[0], torch.tensor([0.96, 0.02, 0.02]), 0.9)
    assert gate.rerank(confident, asks_smallest, _maps(), codebook).index == 0  # never moved
    assert CategoryGate(_detector(), 3).rerank(choice, asks_smallest, _maps(), codebook) is choice


def test_ranker_file_round_trip_and_bad_files(tmp_path):
    ranker = _smallest_ranker()
    ranker.mean.fill_(0.5)
    ranker.save(tmp_path / RANKER_FILE, measured={"keyword_top1": {"all": 0.9}})
    loaded = GeometryRanker.load(tmp_path / RANKER_FILE)
    assert loaded.top_k == 3 and loaded.plausible == ranker.plausible
    for name, tensor in ranker.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors: not a geometry ranker"):
        GeometryRanker.load(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="top_k"):
        GeometryRanker(4, top_k=1)


def test_fitting_learns_which_way_the_query_asks():
    """Synthetic queries: hidden[0] = +1 asks for the largest of three plausible candidates, -1 for the
    smallest; the gated belief alone is right a third of the time."""
    rng = np.random.default_rng(0)

    def draw(n: int):
        hidden = torch.tensor(rng.normal(0, 1, (n, 6)), dtype=torch.float32)
        hidden[:, 0] = torch.tensor(rng.choice([-1.0, 1.0], n))
        maps, target = [], []
        for h in hidden:
            sides = rng.permutation([1, 2, 3])
            maps.append(torch.stack([_blob(3 * j, 2, int(s)) for j, s in enumerate(sides)], dim=1))
            target.append(int(np.argmax(sides) if h[0] > 0 else np.argmin(sides)))
        probs = torch.tensor(rng.dirichlet([5, 5, 5], n), dtype=torch.float32).sort(dim=1, descending=True).values
        return hidden, probs, torch.stack(maps), torch.tensor(target)

    ranker = fit_ranker(*draw(300), top_k=3, steps=300)
    hidden, probs, maps, target = draw(100)
    picks = torch.stack([ranker.scores(h, p, m).argmax() for h, p, m in zip(hidden, probs, maps)])
    assert float((picks == target).float().mean()) > 0.95
    assert float((target == 0).float().mean()) < 0.5  # what the gated belief alone gets
    with pytest.raises(ValueError, match="no query has its target"):
        fit_ranker(hidden, probs, maps, torch.full((100,), -1))
    with pytest.raises(ValueError, match="one row per query"):
        fit_ranker(hidden[:5], probs, maps, target)


def test_predictor_loads_the_ranker_beside_the_detector_and_reasons_with_it(tmp_path):
    path = tmp_path / "ckpt"
    write_gated_checkpoint(path, [0.0, 1.0, 1.0, 1.0])  # every category equally in view
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    plain = Predictor.from_pretrained(str(path))
    hidden_size = plain.model.llava.config.text_config.hidden_size
    assert plain.reasoner.gate.ranker is None
    with torch.inference_mode():
        reasoning = plain.reasoner.reason(image, "the cup")
    assert reasoning.seg_hidden is not None and reasoning.seg_hidden.shape == (hidden_size,)
    GeometryRanker(hidden_size, top_k=3).save(path / RANKER_FILE)  # zero weights: changes nothing
    ranked = Predictor.from_pretrained(str(path))
    assert ranked.reasoner.gate.ranker is not None
    assert Predictor.from_pretrained(str(path), geometry_ranker=False).reasoner.gate.ranker is None
    assert ranked.predict(image, "the cup").keyword == plain.predict(image, "the cup").keyword
    (path / RANKER_FILE).unlink()
    GeometryRanker(hidden_size + 1, top_k=3).save(path / RANKER_FILE)
    with pytest.raises(ValueError, match=f"hidden states of size {hidden_size + 1}"):
        Predictor.from_pretrained(str(path))


def test_fit_ranker_command_fits_measures_saves_and_never_overwrites(tmp_path, capsys):
    from keyseg_core.cli import app as cli

    out, report = tmp_path / RANKER_FILE, tmp_path / "fit.json"
    args = ["fit-ranker", "--train-scenes", "3", "--val-scenes", "2", "--no-progress"]
    assert cli.main(args + ["--save", str(out), "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "| all |" in printed and f"wrote {out}" in printed
    assert GeometryRanker.load(out).weight.abs().sum() > 0
    fitted = json.loads(report.read_text())
    assert fitted["keyword_top1_val"]["queries"]["all"] == 10 and fitted["plausible"] == 0.2
    before = out.read_bytes()
    assert cli.main(args + ["--save", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    assert cli.main(["fit-ranker", "--checkpoint", "config:tiny", "--train-scenes", "1", "--val-scenes", "1",
                     "--no-progress"]) == 2
    assert "needs a checkpoint with a category detector" in capsys.readouterr().err
