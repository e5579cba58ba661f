"""Category gate: the detector's file, the gate's arithmetic, and the predictor picking the category in view."""

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig

from keyseg_core.inference.category_gate import CategoryGate
from keyseg_core.inference.presence import PRESENCE_FILE, PresenceCalibration, signals
from keyseg_core.modeling.category_detector import DETECTOR_FILE, CategoryDetector
from keyseg_core.runtime.predictor import Predictor
from gated_model import NAMES, write_gated_checkpoint

TOWER = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         image_size=28, patch_size=14)


def _detector(config: CLIPVisionConfig = TOWER, names: list[str] = NAMES) -> CategoryDetector:
    torch.manual_seed(0)
    detector = CategoryDetector(config, names)
    with torch.no_grad():
        for p in detector.parameters():
            p.normal_(0, 0.5)
    return detector


def test_detector_file_round_trip(tmp_path):
    detector = _detector()
    pixels = torch.randn(2, 3, 28, 28)
    visible = detector(pixels)
    assert visible.shape == (2, 3) and bool(((visible >= 0) & (visible <= 1)).all())
    detector.save(tmp_path / DETECTOR_FILE)
    loaded = CategoryDetector.load(tmp_path / DETECTOR_FILE)
    assert loaded.names == NAMES and not any(p.requires_grad for p in loaded.parameters())
    assert torch.allclose(loaded(pixels), visible, atol=2e-3)  # stored in float16
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors: not a category detector"):
        CategoryDetector.load(tmp_path / "bad.safetensors")


def test_gate_picks_the_likeliest_category_in_view():
    codebook = torch.arange(12.0).view(3, 4)
    gate = CategoryGate(_detector(), 3)
    logits = torch.tensor([[3.0, 2.0, 0.0]])  # the model believes "bed", then "cup"
    p = logits.softmax(-1)[0]
    (choice,) = gate.choose(logits, torch.tensor([0.0, 1.0, 0.5]), codebook)  # no bed in view
    assert choice.index == 1 and torch.equal(choice.prompt, codebook[1])
    assert choice.mass == pytest.approx(float(p[1] + 0.5 * p[2]))
    assert float(choice.probs.sum()) == pytest.approx(1.0) and float(choice.probs[0]) == 0.0
    assert [c.text for c in gate.candidates(choice, 5)] == ["cup", "dog", "bed"]
    (nothing,) = gate.choose(logits, torch.zeros(3), codebook)  # nothing in view: no belief left
    assert nothing.mass == 0.0


def test_gate_refuses_a_codebook_of_another_size():
    with pytest.raises(ValueError, match="3 categories, but the model's fusion.codebook has 4 prompts"):
        CategoryGate(_detector(), 4)


def _gated(path, patch_logits: list[float]):
    return path, write_gated_checkpoint(path, patch_logits)


@pytest.fixture(scope="module")
def gated_checkpoint(tmp_path_factory):
    """The detector sees only 'dog' (category 2)."""
    return _gated(tmp_path_factory.mktemp("gated") / "ckpt", [0.0, -30.0, -30.0, 30.0])


def test_predictor_segments_and_names_the_category_in_view(gated_checkpoint):
    path, codebook = gated_checkpoint
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    predictor = Predictor.from_pretrained(str(path))
    assert predictor.reasoner.gate is not None
    pred = predictor.predict(image, "the bed")
    assert pred.keyword == "dog" and pred.answer.endswith("dog.") and pred.keyword_topk[0].text == "dog"
    assert 0.0 < pred.category_mass < 1.0 and signals(pred)["category"] == pred.category_mass
    with torch.inference_mode():  # the streaming path picks the same
        reasoning = predictor.reasoner.reason(image, "the bed")
    assert torch.allclose(reasoning.prompts[0].float(), codebook[2], atol=1e-6)
    assert reasoning.category_mass == pytest.approx(pred.category_mass, abs=1e-5)
    predictor.set_image(image)
    (again,) = predictor.predict_queries(["the bed"])
    assert again.keyword == "dog" and np.array_equal(again.mask, pred.mask)
    plain = Predictor.from_pretrained(str(path), category_gate=False)
    assert plain.reasoner.gate is None and plain.predict(image, "the bed").category_mass is None


def test_category_calibration_needs_the_gate(gated_checkpoint, tmp_path):
    path, _ = gated_checkpoint
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in path.iterdir():
        (ckpt / f.name).write_bytes(f.read_bytes())
    PresenceCalibration("category", 2.0, 0.05, "test", 0.0, 0.0, 1.0).save(ckpt / PRESENCE_FILE)
    image = np.full((48, 64, 3), 90, np.uint8)
    pred = Predictor.from_pretrained(str(ckpt)).predict(image, "the bed")  # mass is never above 2
    assert not pred.present and pred.keyword == "" and pred.answer == "I don't see the dog here."
    with pytest.raises(ValueError, match="calibrated on the category gate's signal"):
        Predictor.from_pretrained(str(ckpt), category_gate=False)


def test_each_category_in_view_holding_the_share_is_an_instance(tmp_path):
    """Cup and dog in view, bed not: with an instance share, both become instances with their own masks."""
    from keyseg_core.inference.instances import prediction_instances

    path, codebook = _gated(tmp_path / "ckpt", [-30.0, -30.0, 30.0, 30.0])  # every patch: cup or dog
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    predictor = Predictor.from_pretrained(str(path))
    assert predictor.predict(image, "all the things").instances == []  # no share: one answer
    with pytest.raises(ValueError, match="instance_share: 1.5 must be in"):
        predictor.instance_share = 1.5
    predictor.instance_share = 0.1
    pred = predictor.predict(image, "all the things")
    assert sorted(i.keyword for i in pred.instances) == ["cup", "dog"]
    assert pred.instances[0].keyword == pred.keyword and np.array_equal(pred.instances[0].mask, pred.mask)
    masks, keywords = prediction_instances(pred, "categories")
    assert keywords == [i.keyword for i in pred.instances] and len(masks) == 2
    with torch.inference_mode():
        reasoning = predictor.reasoner.reason(image, "all the things")
    rows = [NAMES.index(k) for k in reasoning.instance_keywords]
    assert torch.allclose(reasoning.prompts.float(), codebook[rows], atol=1e-6)
    predictor.set_image(image)
    (again,) = predictor.predict_queries(["all the things"])
    assert [i.keyword for i in again.instances] == [i.keyword for i in pred.instances]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(again.instances, pred.instances))
    predictor.instance_share = 0.9  # nothing else holds 90%: the answer alone
    assert [i.keyword for i in predictor.predict(image, "all the things").instances] == [pred.keyword]


def test_region_maps_the_patch_grid_back_onto_the_frame():
    sight = torch.zeros(4, 3)  # a 2x2 patch grid, 3 categories
    sight[0, 1] = 1.0  # category 1 only in the top-left patch
    (pad,) = CategoryGate.region(sight, [1], (40, 80), "pad")  # centred in an 80x80 square: rows 20-60
    assert pad.shape == (40, 80)
    assert bool((pad[:10, :30] > 0.5).all()) and bool((pad[:, 50:] < 0.5).all()) and bool((pad[30:] < 0.5).all())
    (crop,) = CategoryGate.region(sight, [1], (40, 80), "crop")  # the centre 40x40 square: cols 20-60
    assert bool((crop[:, :20] == 1).all()) and bool((crop[:, 60:] == 1).all())
    assert bool((crop[:10, 20:35] > 0.5).all()) and bool((crop[:, 45:60] < 0.5).all())


def test_a_region_threshold_keeps_the_mask_where_its_category_is_seen(gated_checkpoint):
    path, _ = gated_checkpoint
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    predictor = Predictor.from_pretrained(str(path), region_threshold=0.5, refine="none")
    with torch.inference_mode():
        reasoning = predictor.reasoner.reason(image, "the bed")
        logits = torch.ones(1, 48, 64)  # SAM would draw the whole frame
        whole = predictor._prediction(reasoning, logits, image)  # the detector sees the dog everywhere
        sight = torch.zeros_like(reasoning.sight)
        grid = int(sight.shape[0] ** 0.5)
        sight.view(grid, grid, -1)[:, : grid // 2, reasoning.categories[0]] = 1.0  # only in the left half
        left = predictor._prediction(reasoning, logits, image, sight)
    assert whole.mask.all()
    assert left.mask[:, :20].all() and not left.mask[:, 44:].any()
    with torch.inference_mode():  # a frame where the detector sees nothing of the dog
        blind = torch.zeros_like(reasoning.sight)
        streamed_blind = predictor._prediction(reasoning, logits, image, blind)
        reasoning.sight = blind
        reasoned_blind = predictor._prediction(reasoning, logits, image)
    assert not streamed_blind.mask.any()  # a streamed frame: dropped, the tracker holds the id
    assert reasoned_blind.mask.all()  # the reasoned frame: the accepted answer is never trimmed away
    streamed, _ = predictor.segment(image, reasoning)  # a later frame: the detector looks at it again
    assert streamed.keyword == "dog" and streamed.mask.shape == (48, 64)
    with pytest.raises(ValueError, match="region_threshold: 1.0 must be in"):
        Predictor.from_pretrained(str(path), region_threshold=1.0)


def test_trim_keeps_the_components_where_the_category_is_seen_best():
    from keyseg_core.inference.category_gate import trim_to_region

    mask = np.zeros((20, 40), bool)
    mask[2:8, 2:10] = True  # the object
    mask[12:18, 25:35] = True  # a spill onto a neighbour
    region = np.full((20, 40), 0.01)
    region[:10, :15] = 0.9
    region[10:, 20:] = 0.2
    both = trim_to_region(mask, region, 0.05, 0.0)
    assert np.array_equal(both, mask)
    best = trim_to_region(mask, region, 0.05, 0.5)  # 0.2 < 0.5 x 0.9: the spill goes
    assert best[2:8, 2:10].all() and not best[10:].any()
    assert not trim_to_region(mask, region, 0.95, 0.5).any()  # nowhere seen that well: an extra instance goes
    # but the answer itself (never_empty) keeps SAM's mask, the component the map sees best
    assert np.array_equal(trim_to_region(mask, region, 0.95, 0.5, never_empty=True), best)
    assert np.array_equal(trim_to_region(mask, region, 0.95, 0.0, never_empty=True), mask)


def test_detector_tiles_and_calibration_travel_with_its_file(tmp_path):
    detector = CategoryDetector(TOWER, NAMES, tiles=0.6, calibration=(2.0, 1.0))
    detector.save(tmp_path / DETECTOR_FILE)
    loaded = CategoryDetector.load(tmp_path / DETECTOR_FILE)
    assert loaded.tiles == 0.6 and loaded.calibration == (2.0, 1.0)
    raw = torch.tensor([0.01, 0.2, 0.5, 0.9])
    expected = torch.sigmoid(2.0 * torch.log(raw / (1 - raw)) + 1.0)
    assert torch.allclose(loaded.calibrated(raw), expected)
    assert torch.equal(CategoryDetector(TOWER, NAMES).calibrated(raw), raw)  # identity: as it was
    with pytest.raises(ValueError, match="tiles 1.5 must be 0"):
        CategoryDetector(TOWER, NAMES, tiles=1.5)
    with pytest.raises(ValueError, match=r"calibration \(0.0, 1.0\) must be \(a > 0, b\)"):
        CategoryDetector(TOWER, NAMES, calibration=(0.0, 1.0))


def test_gate_looks_at_four_corner_tiles_that_cover_the_frame_and_averages_them():
    image = np.arange(40 * 50 * 3, dtype=np.uint8).reshape(40, 50, 3)
    assert CategoryGate(CategoryDetector(TOWER, NAMES), 3).tiles(image) == []
    gate = CategoryGate(CategoryDetector(TOWER, NAMES, tiles=0.6, calibration=(2.0, 0.5)), 3)
    tiles = gate.tiles(image)
    assert [t.shape for t in tiles] == [(24, 30, 3)] * 4
    assert np.array_equal(tiles[0], image[:24, :30]) and np.array_equal(tiles[3], image[16:, 20:])
    sight = torch.tensor([[0.1, 0.0, 0.2], [0.3, 0.0, 0.1]])  # (P=2, K=3)
    tiles_sight = torch.tensor([[[0.9, 0.0, 0.1]], [[0.2, 0.4, 0.0]]])  # (T=2, P=1, K=3)
    mean = torch.tensor([(0.3 + 0.9) / 2, (0.0 + 0.4) / 2, (0.2 + 0.1) / 2])
    assert torch.allclose(gate.visible(sight, tiles_sight), gate.detector.calibrated(mean))


def test_visibility_calibration_reads_present_categories_near_one():
    from keyseg_core.eval.visibility import fit_calibration

    rng = np.random.default_rng(0)
    present = torch.from_numpy(rng.random((300, 6)) < 0.2)
    visible = torch.where(present, torch.from_numpy(rng.uniform(0.1, 0.6, (300, 6))),
                          torch.from_numpy(rng.uniform(0.0, 0.12, (300, 6)))).float()
    a, b = fit_calibration(visible, present)
    calibrated = CategoryDetector(TOWER, NAMES, calibration=(a, b)).calibrated(visible)
    assert a > 0 and float((calibrated[present] >= 0.5).float().mean()) > 0.9
    assert float((calibrated[~present] >= 0.5).float().mean()) < 0.05
    with pytest.raises(ValueError, match="does not rise with presence"):
        fit_calibration(1 - visible, present)


def test_raw_visibility_of_generated_scenes_marks_what_each_holds():
    from keyseg_core.eval.visibility import raw_visibility
    from keyseg_core.modeling.processor import preprocess_clip
    from keyseg_core.scenes import load_knowledge, make_sample

    names = sorted(load_knowledge().categories)
    detector = CategoryDetector(TOWER, names, tiles=0.6, calibration=(3.0, 0.0))
    visible, present = raw_visibility(detector, lambda im: preprocess_clip(im, 28), 2, "val", 2, progress=False)
    assert visible.shape == present.shape == (2, len(names)) and bool(((visible >= 0) & (visible <= 1)).all())
    held = {o.category for o in make_sample(2, "val", 1).scene.objects}
    assert {names[k] for k in present[1].nonzero().flatten().tolist()} == held
    assert detector.calibration == (3.0, 0.0)  # measured raw, left as it was


def test_a_detector_with_tiles_gates_every_path_alike(tmp_path):
    path = tmp_path / "ckpt"
    write_gated_checkpoint(path, [0.0, -30.0, 30.0, -30.0], tiles=0.6, calibration=(2.0, 0.5))
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    predictor = Predictor.from_pretrained(str(path))
    single = predictor.predict(image, "the bed")
    (batched,) = predictor.predict_batch([image], ["the bed"])
    with torch.inference_mode():
        streamed = predictor.reasoner.reason(image, "the bed")
    assert single.keyword == batched.keyword == streamed.keyword == "cup"
    assert single.category_mass == pytest.approx(batched.category_mass, abs=1e-5)
    assert streamed.category_mass == pytest.approx(single.category_mass, abs=1e-5)
    batch = predictor.processor([image], ["the bed"]).to(predictor.device, predictor.dtype)
    with torch.inference_mode(), pytest.raises(ValueError, match="looks at tiles of the frame: give the images"):
        predictor.reasoner.reason_batch(batch, ["the bed"])
    torch.manual_seed(0)  # a head that reads the pixels: the tiles preprocessed on the device (as on CUDA)
    predictor.reasoner.gate.detector.patch.weight.normal_(0, 0.5)  # give what the PIL path gives
    with torch.inference_mode():
        pil = predictor.reasoner.encode_frame(image).visible
        predictor.reasoner.on_device = True
        on_device = predictor.reasoner.encode_frame(image).visible
    assert torch.allclose(on_device, pil, atol=0.02) and float(pil.max() - pil.min()) > 0.05


def test_eval_reports_not_here_and_instances_with_robot_checks(gated_checkpoint, tmp_path, capsys):
    """`keyseg eval --robot-checks N`: beside gIoU, the model's own "not here" decision and "all the
    <kind>" counts on generated test scenes, printed and in report.json."""
    import json

    from keyseg_core.cli.app import main

    path, _ = gated_checkpoint
    assert main(["generate", "--split", "test", "--n", "2", "--seed", "3", "--out", str(tmp_path / "data")]) == 0
    out = tmp_path / "report"
    args = ["eval", "--checkpoint", str(path), "--dataset", "reasonseg", "--split", "test", "--data-root",
            str(tmp_path / "data"), "--output", str(out), "--no-progress"]
    assert main(args + ["--robot-checks", "3"]) == 0
    printed = capsys.readouterr().out
    assert "not here (generated test, seed 3, scenes 0-2): false positives" in printed
    assert "the checkpoint has no presence calibration" in printed and "count right" in printed
    checks = json.loads((out / "report.json").read_text())["robot_checks"]
    assert checks["not_here"]["false_positive_rate"] == 1.0 and checks["not_here"]["miss_rate"] == 0.0
    assert checks["instances"]["mode"] == "categories" and checks["instances"]["measured_on"].endswith("scenes 0-2")
    assert main(args + ["--robot-checks", "-1"]) == 2
    assert "--robot-checks: -1 must be >= 0" in capsys.readouterr().err
