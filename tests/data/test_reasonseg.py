import json
import os
import time

import numpy as np
import pytest

from keyseg_core.data import DatasetError, ReasonSegDataset, open_dataset


def poly(label, x0, y0, x1, y1):
    return {"label": label, "shape_type": "polygon", "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}


def test_item_fields_and_fill_with_outline(reasonseg):
    reasonseg.add("val", "a", [poly("target", 2.9, 2.2, 6.7, 6.0)], text=["q one", "q two"])
    ds = open_dataset("reasonseg", reasonseg.root, "val")
    item = ds[0]
    assert item.image.shape == (20, 30, 3) and item.image.dtype == np.uint8
    assert item.mask.shape == (20, 30) and item.mask.dtype == np.uint8
    expected = np.zeros((20, 30), np.uint8)
    expected[2:7, 2:7] = 1  # points truncated to int, outline included: rows/cols 2..6
    np.testing.assert_array_equal(item.mask, expected)
    assert item.queries == ["q one", "q two"] and item.is_sentence
    assert item.id == "reasonseg/val/a" and item.keyword is None and item.explanation is None
    assert item.image_path.endswith("a.jpg") and item.annotation_path.endswith("a.json")


def test_ignore_hole_painted_after_larger_target_and_flag_skipped(reasonseg):
    shapes = [poly("ignore", 4, 4, 6, 6), poly("Flag", 0, 0, 29, 19), poly("target", 1, 1, 10, 10)]
    reasonseg.add("val", "a", shapes)
    mask = ReasonSegDataset(reasonseg.root, "val")[0].mask
    assert mask[5, 5] == 255 and mask[4, 4] == 255  # small ignore punches a hole although listed first
    assert mask[2, 2] == 1 and mask[15, 25] == 0  # flag painted nothing
    assert set(np.unique(mask)) == {0, 1, 255}


def test_small_target_inside_large_ignore_and_two_targets_merge(reasonseg):
    shapes = [poly("target", 4, 4, 6, 6), poly("ignore region", 0, 0, 12, 12), poly("target", 20, 10, 25, 15)]
    reasonseg.add("val", "a", shapes)
    mask = ReasonSegDataset(reasonseg.root, "val")[0].mask
    assert mask[5, 5] == 1 and mask[1, 1] == 255 and mask[12, 22] == 1
    assert (mask == 1).sum() == 9 + 36


def test_cp1252_json_grayscale_image_and_empty_shapes(reasonseg):
    reasonseg.add("test", "a", [], text=["café au lait — où?"], encoding="cp1252", mode="L")
    item = ReasonSegDataset(reasonseg.root, "test")[0]
    assert item.queries == ["café au lait — où?"]
    assert item.image.shape == (20, 30, 3)
    assert item.mask.sum() == 0  # no shapes: all-background mask, not an error


def test_polygon_partly_outside_is_clipped(reasonseg):
    reasonseg.add("val", "a", [poly("target", -10, -10, 3, 3)])
    mask = ReasonSegDataset(reasonseg.root, "val")[0].mask
    assert mask[:4, :4].all() and mask.sum() == 16


@pytest.mark.parametrize(
    "shape, reason",
    [
        ({"label": "target", "points": []}, "no_points"),
        ({"label": "target"}, "no_points"),
        ({"label": "target", "points": [[1, 1], [1e12, 5], [2, 2]]}, "bad_points"),
        ({"label": "target", "points": [[1, "x"], [5, 5], [2, 2]]}, "bad_points"),
        (poly("target", 100, 100, 120, 120), "empty_target"),
    ],
)
def test_bad_shape_names_file_and_record(reasonseg, shape, reason):
    reasonseg.add("val", "good", [poly("target", 1, 1, 4, 4)])
    path = reasonseg.add("val", "bad", [poly("ignore", 1, 1, 4, 4), shape])
    ds = ReasonSegDataset(reasonseg.root, "val")  # lazy: opens fine
    assert [r.stem for r in ds.records] == ["bad", "good"]
    with pytest.raises(DatasetError) as info:
        ds[0]
    assert info.value.reason == reason and info.value.file == str(path)
    assert "bad" in str(info.value) and str(path) in str(info.value)
    with pytest.raises(DatasetError, match=reason):
        ReasonSegDataset(reasonseg.root, "val", validate=True)
    skipping = ReasonSegDataset(reasonseg.root, "val", skip_bad=True)
    assert len(skipping) == 1 and skipping.skips.counts == {reason: 1}
    assert str(path) in skipping.skips.summary()


def test_truncated_json_and_missing_files(reasonseg):
    reasonseg.add("train", "good")
    broken = reasonseg.add("train", "broken", raw=b'{"text": ["a"], "shapes": [')
    orphan = reasonseg.add("train", "orphan", image=False)
    with pytest.raises(DatasetError) as info:
        ReasonSegDataset(reasonseg.root, "train")
    assert info.value.reason == "missing_image" and info.value.file == str(orphan)
    ds = ReasonSegDataset(reasonseg.root, "train", skip_bad=True)
    assert [r.stem for r in ds.records] == ["good"]
    assert ds.skips.counts == {"missing_image": 1, "bad_json": 1}
    assert str(broken) in "\n".join(ds.skips.examples["bad_json"])
    os.remove(orphan)
    with pytest.raises(DatasetError, match="invalid JSON") as info:
        ReasonSegDataset(reasonseg.root, "train")[0]
    assert info.value.file == str(broken)


def test_unknown_split_and_missing_root(reasonseg, tmp_path):
    reasonseg.add("val", "a")
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        open_dataset("reasonseg", reasonseg.root, "dev")
    with pytest.raises(DatasetError, match="no reason_seg"):
        open_dataset("reasonseg", tmp_path / "nowhere", "val")
    with pytest.raises(DatasetError, match="split folder not found"):
        open_dataset("reasonseg", reasonseg.root, "train")
    assert len(open_dataset("reasonseg", reasonseg.dir, "val")) == 1  # the ReasonSeg folder itself works too


def test_keywords_explanations_and_require_keyword(reasonseg):
    for stem in "abc":
        reasonseg.add("train", stem, keyword="From JSON" if stem != "c" else None)
    reasonseg.keywords({"a": "swim cap"})
    reasonseg.explanatory([{"image": "b.jpg", "json": "b.json", "query": "q", "outputs": "The dog is there."}])
    ds = ReasonSegDataset(reasonseg.root, "train")
    assert [ds[i].keyword for i in range(3)] == ["swim cap", "from json", None]  # file wins over JSON
    assert ds[1].explanation == "The dog is there."
    assert ReasonSegDataset(reasonseg.root, "train", keywords=False)[0].keyword == "from json"
    strict = ReasonSegDataset(reasonseg.root, "train", require_keyword=True)
    with pytest.raises(DatasetError, match="no keyword") as info:
        strict[2]
    assert info.value.file.endswith("c.json")
    assert len(ReasonSegDataset(reasonseg.root, "train", require_keyword=True, skip_bad=True)) == 2


def test_conflicting_keyword_entries_are_an_error(reasonseg):
    reasonseg.add("train", "a")
    path = reasonseg.dir / "explanatory_key" / "keyword_outputs.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([{"image": "a.jpg", "keyword": "dog"}, {"image": "a.jpg", "keyword": "cat"}]))
    with pytest.raises(DatasetError, match="conflicts") as info:
        ReasonSegDataset(reasonseg.root, "train")
    assert info.value.record == 1


def test_large_index_opens_fast(tmp_path):
    split = tmp_path / "reason_seg" / "ReasonSeg" / "train"
    split.mkdir(parents=True)
    for i in range(10_000):  # 20k files; a 20k-image split opens in ~0.2 s (docs/data.md)
        for suffix in (".jpg", ".json"):
            open(split / f"{i:06d}{suffix}", "wb").close()
    start = time.perf_counter()
    ds = ReasonSegDataset(tmp_path, "train")
    elapsed = time.perf_counter() - start
    assert len(ds) == 10_000
    assert elapsed < 3.0, f"opening a 10k index took {elapsed:.2f} s"
