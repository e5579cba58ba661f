"""keyseg generate: exact masks, reproducibility, unique targets, held-out splits, reader round trip,
CLI refusals and moving sequences (keyseg_core/scenes)."""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keyseg_core.cli.app import main
from keyseg_core.data import DatasetError, open_dataset
from keyseg_core.data.keyword_file import read_keyword_file
from keyseg_core.scenes import SceneConfig, generate_sequence, generate_split, load_knowledge, make_sample
from keyseg_core.scenes.backgrounds import PHOTOS_HELD_OUT, TEXTURES_HELD_OUT, background_names
from keyseg_core.scenes.compose import MIN_VISIBLE, ObjectInfo, patch_of
from keyseg_core.scenes.knowledge import KnowledgeError, parse_knowledge
from keyseg_core.scenes.queries import (
    HELD_OUT_TEMPLATES,
    QUERY_TYPES,
    SIZE_WORDS,
    TEMPLATES,
    QuerySpec,
    is_valid,
    render_query,
    resolve,
)
from keyseg_core.scenes.render import check_glyphs

KB = load_knowledge()
REQUIRED = {
    "bed": 0x1F6CF, "chair": 0x1FA91, "couch": 0x1F6CB, "toilet": 0x1F6BD, "bathtub": 0x1F6C1, "cup": 0x2615,
    "bottle": 0x1F37E, "wine glass": 0x1F377, "spoon": 0x1F944, "bowl": 0x1F963, "knife": 0x1F52A,
    "apple": 0x1F34E, "banana": 0x1F34C, "pizza": 0x1F355, "cake": 0x1F382, "carrot": 0x1F955,
    "broccoli": 0x1F966, "car": 0x1F697, "bus": 0x1F68C, "bicycle": 0x1F6B2, "motorcycle": 0x1F3CD,
    "airplane": 0x2708, "boat": 0x26F5, "train": 0x1F686, "truck": 0x1F69A, "cat": 0x1F408, "dog": 0x1F415,
    "bird": 0x1F426, "horse": 0x1F40E, "cow": 0x1F404, "sheep": 0x1F411, "elephant": 0x1F418,
    "umbrella": 0x2602, "backpack": 0x1F392, "suitcase": 0x1F9F3, "sports ball": 0x26BD, "kite": 0x1FA81,
    "skateboard": 0x1F6F9, "tv": 0x1F4FA, "laptop": 0x1F4BB, "mouse": 0x1F5B1, "keyboard": 0x2328,
    "cell phone": 0x1F4F1, "book": 0x1F4D5, "clock": 0x23F0, "scissors": 0x2702, "teddy bear": 0x1F9F8,
    "toothbrush": 0x1FAA5, "key": 0x1F511, "hammer": 0x1F528, "candle": 0x1F56F, "guitar": 0x1F3B8,
    "glasses": 0x1F453, "hat": 0x1F3A9, "shoe": 0x1F45F, "light bulb": 0x1F4A1, "bucket": 0x1FAA3,
    "ladder": 0x1FA9C, "broom": 0x1F9F9, "potted plant": 0x1FAB4,
}  # fmt: skip


@lru_cache(maxsize=None)
def sample(split: str, index: int, seed: int = 0):
    return make_sample(seed, split, index)


def many(split: str, n: int):
    return [sample(split, i) for i in range(n)]


def obj(category: str, x0: int, y0: int, x1: int, y1: int, visible: int = 100) -> ObjectInfo:
    return ObjectInfo(category, (x0, y0, x1, y1), visible, visible)


# --- knowledge table ---------------------------------------------------------------------------


def test_table_has_required_categories_and_every_glyph_renders():
    for name, cp in REQUIRED.items():
        assert KB.category(name).codepoint == cp, name
    check_glyphs({c.keyword: c.codepoint for c in KB.categories.values()})  # raises naming empty glyphs
    for fact in KB.facts.values():
        assert 2 <= len(fact.phrasings) <= 4 and fact.members and not fact.members & fact.also
    for cat in KB.categories.values():
        assert cat.kinds and cat.uses and cat.properties
    assert all(len(t) >= 6 for t in TEMPLATES.values())


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda d: d["categories"]["bed"].update(kinds=["furnitur"]), "categories.bed.kinds"),
        (lambda d: d["categories"]["chair"]["uses"].append("no such fact"), "categories.chair.uses[2]"),
        (lambda d: d["categories"]["bed"].update(codepoint="XYZ"), "categories.bed.codepoint"),
        (lambda d: d["categories"]["bed"]["properties"].append(["has a mattress", "x"]), "bed.properties[2]"),
        (lambda d: d["categories"]["bed"]["uses"][0].update(also=["sofa"]), "categories.bed.uses[0].also"),
        (lambda d: d["categories"]["bed"]["properties"].append(["only one"]), "categories.bed.properties[2]"),
        (lambda d: d["conflicts"].append(["bowl", "unicorn"]), "conflicts[3]"),
    ],
)
def test_table_errors_name_the_key(edit, key):
    import yaml

    from keyseg_core.scenes.knowledge import DEFAULT_PATH

    data = yaml.safe_load(DEFAULT_PATH.read_text())
    edit(data)
    with pytest.raises(KnowledgeError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_knowledge(data)


# --- exact masks -------------------------------------------------------------------------------


@pytest.mark.parametrize("split, index", [("train", i) for i in range(6)] + [("test", i) for i in range(3)])
def test_masks_equal_what_was_drawn(split, index):
    s = sample(split, index)
    height, width = s.scene.labels.shape
    expected = np.zeros((height, width), np.int32)
    drawn_union = np.zeros((height, width), bool)
    patches = [patch_of(o, KB) for o in s.scene.layout]
    for i, p in enumerate(patches):  # independent painter: full-canvas boolean masks in z order
        canvas = np.zeros((height, width), bool)
        h, w = p.mask.shape
        assert p.x0 >= 0 and p.y0 >= 0 and p.x0 + w <= width and p.y0 + h <= height  # fully inside
        canvas[p.y0 : p.y0 + h, p.x0 : p.x0 + w] = p.mask
        expected[canvas] = i + 1
        drawn_union |= canvas
        assert s.scene.objects[i].drawn == int(p.mask.sum())
    np.testing.assert_array_equal(s.scene.labels, expected)
    instance = [s.scene.labels == i + 1 for i in range(len(patches))]
    assert sum(m.astype(int) for m in instance).max() <= 1  # disjoint
    np.testing.assert_array_equal(np.logical_or.reduce(instance), drawn_union)  # union = drawn alpha
    for i, (o, p) in enumerate(zip(s.scene.objects, patches)):
        assert o.visible == int(instance[i].sum()) >= MIN_VISIBLE * o.drawn
        # the visible pixels carry the glyph's own colours
        region = s.scene.image[p.y0 : p.y0 + p.mask.shape[0], p.x0 : p.x0 + p.mask.shape[1]]
        mine = instance[i][p.y0 : p.y0 + p.mask.shape[0], p.x0 : p.x0 + p.mask.shape[1]]
        np.testing.assert_array_equal(region[mine], p.rgb[mine])
    target = [o.category for o in s.scene.objects].index(s.keyword)
    np.testing.assert_array_equal(s.target_mask, instance[target].astype(np.uint8))
    assert len({o.category for o in s.scene.objects}) == len(s.scene.objects)


def test_scene_shape_rules():
    assert frozenset(("bowl", "spoon")) in KB.conflicts  # the bowl glyph draws a spoon
    for s in many("train", 60):
        cats = [o.category for o in s.scene.objects]
        assert all(KB.compatible(c, [o for o in cats if o != c]) for c in cats)
        assert 3 <= len(s.scene.objects) <= 6
        assert s.scene.image.shape == (240, 320, 3)
        for placed in s.scene.layout:
            assert -15 <= placed.angle <= 15 and 0 < placed.size <= 130


# --- reproducibility ---------------------------------------------------------------------------


def test_sample_reproduces_by_seed_and_streams_differ():
    a, b = make_sample(5, "train", 7), make_sample(5, "train", 7)
    np.testing.assert_array_equal(a.scene.image, b.scene.image)
    assert [q.text for q in a.queries] == [q.text for q in b.queries]
    other = [make_sample(5, "val", 7), make_sample(6, "train", 7), make_sample(5, "train", 8)]
    assert all(not np.array_equal(a.scene.image, o.scene.image) for o in other)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generated_files_are_byte_identical_and_prefix_stable(tmp_path):
    config = SceneConfig()
    generate_split(tmp_path / "a", "train", 6, 3, config, contact=0)
    generate_split(tmp_path / "b", "train", 6, 3, config, contact=0, workers=2)
    generate_split(tmp_path / "c", "train", 3, 3, config, contact=0)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b  # workers do not change a byte (JSON, JPEG, PNG, manifest, keyword file)
    for name, data in c.items():
        if "/train/" in name or "/masks/" in name:
            assert a[name] == data  # --n 3 is a prefix of --n 6


# --- unique targets ----------------------------------------------------------------------------


def test_every_generated_query_singles_out_its_target():
    types = Counter()
    for s in many("train", 150) + many("test", 60):
        objects = s.scene.objects
        for q in s.queries:
            assert q.spec.target == s.keyword
            assert resolve(q.spec, objects, KB).unique == s.keyword, q.text
            assert is_valid(q.spec, objects, KB)
            types[q.spec.type] += 1
            if q.spec.type in ("use", "property"):
                fact = KB.facts[q.spec.fact]
                assert sum(fact.holds(o.category) for o in objects) == 1 and s.keyword in fact.members
            if q.spec.type == "kind":
                assert sum(KB.has_kind(o.category, q.spec.noun_kind) for o in objects) == 1
        assert len({q.text for q in s.queries}) == 3
    assert set(types) == set(QUERY_TYPES), types


def test_fact_rule_blocks_shared_and_also_facts():
    wheels = "property:has wheels"
    car, has_wheels = obj("car", 0, 0, 9, 9), QuerySpec("property", "car", fact=wheels)
    assert is_valid(has_wheels, [car, obj("cat", 50, 0, 59, 9)], KB)
    assert not is_valid(has_wheels, [car, obj("bus", 50, 0, 59, 9)], KB)
    # suitcase is only an `also` of "has wheels": blocks it, and is never its target
    assert not is_valid(has_wheels, [car, obj("suitcase", 50, 0, 59, 9)], KB)
    assert not is_valid(QuerySpec("property", "suitcase", fact=wheels), [obj("suitcase", 0, 0, 9, 9)], KB)
    animal = QuerySpec("kind", "cat", noun_kind="animal")
    assert not is_valid(animal, [obj("cat", 0, 0, 9, 9), obj("dog", 50, 0, 59, 9)], KB)


def test_spatial_rule_needs_clear_margin_and_no_rival():
    ref = obj("car", 100, 100, 140, 140)  # width 40: band 10 px past the left edge (x=100)
    left = QuerySpec("spatial", "cat", relation="left", reference="car")
    assert is_valid(left, [ref, obj("cat", 70, 105, 90, 125)], KB)  # centre 80: 20 px past
    assert not is_valid(left, [ref, obj("cat", 86, 105, 100, 125)], KB)  # centre 93: inside the band
    assert not is_valid(left, [ref, obj("cat", 70, 0, 90, 20)], KB)  # far more above than left
    rival = obj("dog", 95, 150, 105, 170)  # centre 100: ambiguous
    assert not is_valid(left, [ref, obj("cat", 70, 105, 90, 125), rival], KB)
    animal_left = QuerySpec("spatial", "cat", noun_kind="animal", relation="left", reference="car")
    assert is_valid(animal_left, [ref, obj("cat", 70, 105, 90, 125), obj("apple", 60, 105, 80, 125)], KB)
    assert not is_valid(left, [ref, obj("cat", 70, 105, 90, 125), obj("apple", 60, 105, 80, 125)], KB)
    below = QuerySpec("spatial", "cat", relation="below", reference="car")
    assert is_valid(below, [ref, obj("cat", 110, 160, 130, 180), obj("dog", 110, 110, 130, 120)], KB)


def test_size_rule_needs_two_of_the_kind_and_ratio():
    big = QuerySpec("size", "cat", noun_kind="animal", direction="largest")
    small = QuerySpec("size", "dog", noun_kind="animal", direction="smallest")
    assert not is_valid(big, [obj("cat", 0, 0, 30, 30, 500), obj("car", 0, 0, 10, 10, 100)], KB)  # one animal
    assert is_valid(big, [obj("cat", 0, 0, 30, 30, 130), obj("dog", 0, 0, 20, 20, 100)], KB)
    assert not is_valid(big, [obj("cat", 0, 0, 30, 30, 129), obj("dog", 0, 0, 20, 20, 100)], KB)  # pixels close
    assert not is_valid(big, [obj("cat", 0, 0, 20, 20, 200), obj("dog", 0, 0, 20, 20, 100)], KB)  # boxes equal
    cow = obj("cow", 0, 0, 60, 60, 900)
    assert is_valid(small, [obj("cat", 0, 0, 30, 30, 130), obj("dog", 0, 0, 20, 20, 100), cow], KB)


# --- held-out templates, phrasings and backgrounds ---------------------------------------------


def _held_out(q: dict) -> tuple[bool, bool]:
    """(template held out, phrasing held out) for one JSON query record."""
    template = q["template"] >= len(TEMPLATES[q["type"]]) - HELD_OUT_TEMPLATES
    phrasing = False
    if q["type"] in ("use", "property"):
        phrasing = q["phrasing"] == len(KB.facts[q["fact"]].phrasings) - 1
    elif q["type"] == "size":
        phrasing = q["phrasing"] == len(SIZE_WORDS[q["direction"]]) - 1
    return template, phrasing


def test_held_out_wording_and_backgrounds_only_in_test(tmp_path):
    open_bg, held_bg = set(background_names("train")), set(background_names("test"))
    assert not open_bg & held_bg and any(n.startswith("texture:") for n in held_bg)
    assert {f"photo:{p}" for p in PHOTOS_HELD_OUT} | {f"texture:{t}" for t in TEXTURES_HELD_OUT} == held_bg
    generate_split(tmp_path, "train", 150, 0, contact=0)
    generate_split(tmp_path, "val", 50, 0, contact=0)
    generate_split(tmp_path, "test", 120, 0, contact=0)
    seen = {}
    for split in ("train", "val", "test"):
        held = Counter()
        for path in sorted((tmp_path / "reason_seg" / "ReasonSeg" / split).glob("*.json")):
            data = json.loads(path.read_text())
            held["background"] += data["background"] in held_bg
            assert data["background"] in (held_bg if split == "test" else open_bg)
            for text, q in zip(data["text"], data["queries"]):
                fields = ("type", "target", "fact", "noun_kind", "relation", "reference", "direction")
                spec = QuerySpec(**{k: q.get(k) for k in fields})
                template, phrasing = _held_out(q)
                held["template"] += template
                held["phrasing"] += phrasing
                # the recorded template/phrasing indices are the ones that made the text
                (tpl, _), words = TEMPLATES[q["type"]][q["template"]], None
                if q["type"] in ("use", "property"):
                    words = KB.facts[q["fact"]].phrasings[q["phrasing"]]
                    assert words in text
                assert text.startswith(tpl.split("{")[0])
                assert spec.target == data["keyword"]
        seen[split] = held
    for split in ("train", "val"):
        assert seen[split]["template"] == seen[split]["phrasing"] == seen[split]["background"] == 0
    assert seen["test"]["template"] > 0 and seen["test"]["phrasing"] > 0 and seen["test"]["background"] > 0


def test_render_query_never_uses_held_out_wording_outside_test():
    rng = np.random.default_rng(0)
    spec = QuerySpec("property", "elephant", fact=KB.category("elephant").properties[0], noun_kind="animal")
    held_phrase = KB.facts[spec.fact].held_out
    texts_train = {render_query(spec, KB, rng, test=False).text for _ in range(300)}
    texts_test = {render_query(spec, KB, rng, test=True).text for _ in range(300)}
    assert not any(held_phrase in t for t in texts_train)
    assert any(held_phrase in t for t in texts_test)
    held_templates = {t for t, _ in TEMPLATES["property"][-HELD_OUT_TEMPLATES:]}
    assert any(t.startswith(h.split("{")[0]) for t in texts_test for h in held_templates)


# --- reader round trip -------------------------------------------------------------------------


def test_reader_reads_generated_split_and_keyword_file(tmp_path):
    generate_split(tmp_path, "train", 5, 0, contact=4)
    generate_split(tmp_path, "val", 3, 0, contact=0)
    ds = open_dataset("reasonseg", tmp_path, "train", validate=True, require_keyword=True)
    assert len(ds) == 5
    for i in range(5):
        item, s = ds[i], sample("train", i)
        np.testing.assert_array_equal(item.mask, s.target_mask)  # mask PNG = drawn target mask
        assert item.keyword == s.keyword and item.queries == [q.text for q in s.queries]
        assert item.image.shape == (240, 320, 3)
        assert np.abs(item.image.astype(int) - s.scene.image).mean() < 16  # JPEG q92 of the same (noisy) pixels
    rs = tmp_path / "reason_seg" / "ReasonSeg"
    entries = read_keyword_file(rs / "explanatory_key" / "keyword_outputs.json")
    assert sorted(entries) == [f"train_{i:06d}" for i in range(5)] + [f"val_{i:06d}" for i in range(3)]
    assert entries["val_000001"].keyword == sample("val", 1).keyword
    # rewriting train keeps val's entries
    generate_split(tmp_path, "train", 2, 1, contact=0, overwrite=True)
    entries = read_keyword_file(rs / "explanatory_key" / "keyword_outputs.json")
    assert sorted(entries) == ["train_000000", "train_000001"] + [f"val_{i:06d}" for i in range(3)]
    assert len(open_dataset("reasonseg", tmp_path, "val", validate=True)) == 3
    assert not list((rs / "train").glob("*.png"))  # masks live outside the split folder
    data = json.loads((rs / "train" / "train_000000.json").read_text())
    assert data["mask"] == "../masks/train/train_000000.png" and data["shapes"][0]["label"] == "target"
    manifest = json.loads((rs / "train_manifest.json").read_text())
    assert manifest["n"] == 2 and manifest["seed"] == 1 and len(manifest["categories"]) == len(KB.categories)
    assert (tmp_path / "contact_train.png").is_file() is False  # --overwrite removed it, contact=0 made none


def test_shapes_polygons_approximate_the_exact_mask(tmp_path):
    generate_split(tmp_path, "val", 4, 0, contact=0)
    rs = tmp_path / "reason_seg" / "ReasonSeg"
    for i in range(4):
        path = rs / "val" / f"val_{i:06d}.json"
        data = json.loads(path.read_text())
        data.pop("mask")
        path.write_text(json.dumps(data))
    ds = open_dataset("reasonseg", tmp_path, "val")
    for i in range(4):
        exact = sample("val", i).target_mask.astype(bool)
        poly = ds[i].mask == 1
        assert (exact & poly).sum() / (exact | poly).sum() > 0.9


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "missing_mask"),
        (lambda p: Image.fromarray(np.zeros((5, 5), np.uint8), "L").save(p), "bad_mask"),  # wrong size
        (lambda p: Image.fromarray(np.full((20, 30), 7, np.uint8), "L").save(p), "bad_mask"),  # bad value
        (lambda p: Image.fromarray(np.zeros((20, 30, 3), np.uint8), "RGB").save(p), "bad_mask"),  # mode
        (lambda p: p.write_bytes(b"not a png"), "bad_mask"),
    ],
)
def test_reader_mask_png_errors_name_file_and_reason(reasonseg, make, reason):
    reasonseg.add("val", "a", mask="../masks/val/a.png")
    png = reasonseg.dir / "masks" / "val" / "a.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    make(png)
    ds = open_dataset("reasonseg", reasonseg.root, "val")
    with pytest.raises(DatasetError, match=reason) as err:
        ds[0]
    assert "a.png" in str(err.value)


def test_reader_mask_png_wins_over_shapes(reasonseg):
    reasonseg.add("val", "a", mask="../masks/val/a.png")
    mask = np.zeros((20, 30), np.uint8)
    mask[10:12, 20:25] = 1
    mask[0, 0] = 255
    png = reasonseg.dir / "masks" / "val" / "a.png"
    png.parent.mkdir(parents=True)
    Image.fromarray(mask, "L").save(png)
    np.testing.assert_array_equal(open_dataset("reasonseg", reasonseg.root, "val", validate=True)[0].mask, mask)


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_generates_and_refuses(tmp_path, capsys):
    out = tmp_path / "gen"
    args = ["generate", "--split", "val", "--seed", "1", "--out", str(out), "--contact", "0"]
    assert main(args + ["--n", "3"]) == 0
    assert "images/s" in capsys.readouterr().out
    assert main(args + ["--n", "3"]) == 2
    assert "already holds the val split" in capsys.readouterr().err
    assert main(args + ["--n", "2", "--overwrite"]) == 0
    assert len(list((out / "reason_seg" / "ReasonSeg" / "val").glob("*.jpg"))) == 2
    assert len(list((out / "reason_seg" / "ReasonSeg" / "masks" / "val").glob("*.png"))) == 2
    assert main(["generate", "--split", "train", "--n", "0", "--out", str(out)]) == 2
    assert "--n must be > 0" in capsys.readouterr().err
    assert main(["generate", "--split", "train", "--n", "2", "--out", str(out), "--categories", "cat,unicorn,dog"]) == 2
    err = capsys.readouterr().err
    assert "unknown category 'unicorn'" in err and "teddy bear" in err
    for bad in (["--size", "320by240"], ["--size", "10x10"], ["--objects", "5-3"], ["--objects", "0-2"]):
        assert main(["generate", "--split", "train", "--n", "2", "--out", str(out), *bad]) == 2
        assert "--size" in capsys.readouterr().err or bad[0] == "--objects"
    assert not (out / "reason_seg" / "ReasonSeg" / "train").exists()


def test_cli_categories_restrict_scenes(tmp_path):
    out = tmp_path / "gen"
    cats = "cat,dog,car,bus,apple"
    args = ["--categories", cats, "--objects", "3-4", "--contact", "0"]
    assert main(["generate", "--split", "train", "--n", "4", "--out", str(out), *args]) == 0
    for path in (out / "reason_seg" / "ReasonSeg" / "train").glob("*.json"):
        assert {o["category"] for o in json.loads(path.read_text())["objects"]} <= set(cats.split(","))


def test_overwrite_refuses_foreign_files(tmp_path):
    generate_split(tmp_path, "val", 2, 0, contact=0)
    (tmp_path / "reason_seg" / "ReasonSeg" / "val" / "real_photo.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="did not write"):
        generate_split(tmp_path, "val", 2, 0, contact=0, overwrite=True)


# --- video -------------------------------------------------------------------------------------


def test_video_masks_uniqueness_and_smooth_motion():
    seq = generate_sequence(24, seed=3)
    again = generate_sequence(24, seed=3)
    assert len(seq) == 24 and seq.texts == again.texts and len(seq.texts) == 3
    assert all(np.array_equal(a, b) for a, b in zip(seq.frames, again.frames))
    target = seq.keyword
    for frame, mask, layout, objects in zip(seq.frames, seq.masks, seq.layouts, seq.objects):
        assert frame.shape == (240, 320, 3) and mask.dtype == np.uint8
        info = next(o for o in objects if o.category == target)
        assert int(mask.sum()) == info.visible >= MIN_VISIBLE * info.drawn
        assert all(is_valid(q.spec, objects, KB) for q in seq.queries)
        # the mask is the target's pixels minus what lies on top of it
        i = [o.category for o in layout].index(target)
        patches = [patch_of(o, KB) for o in layout]
        own = np.zeros(mask.shape, bool)
        p = patches[i]
        own[p.y0 : p.y0 + p.mask.shape[0], p.x0 : p.x0 + p.mask.shape[1]] = p.mask
        for q in patches[i + 1 :]:
            above = np.zeros(mask.shape, bool)
            above[q.y0 : q.y0 + q.mask.shape[0], q.x0 : q.x0 + q.mask.shape[1]] = q.mask
            own &= ~above
        np.testing.assert_array_equal(mask, own.astype(np.uint8))
    for a, b in zip(seq.layouts, seq.layouts[1:]):  # smooth: small steps, same objects
        for oa, ob in zip(a, b):
            assert oa.category == ob.category and abs(oa.cx - ob.cx) <= 3 and abs(oa.cy - ob.cy) <= 3
            assert abs(ob.size / oa.size - 1) < 0.025
