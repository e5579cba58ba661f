import pickle

import numpy as np
import pytest
from pycocotools import mask as mask_api

from keyseg_core.data import DatasetError, RefDataset, load_refs, open_dataset


def rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def str_rle(h, w, rows, cols):
    m = np.zeros((h, w), np.uint8)
    m[rows, cols] = 1
    rle = mask_api.encode(np.asfortranarray(m))
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}, m


@pytest.fixture
def refcoco(refer):
    refer.image(1)
    refer.image(2, height=12, width=10, mode="L")  # grayscale COCO image
    refer.ann(101, 1, [rect(2, 2, 8, 8), rect(5, 5, 12, 10)])  # overlapping parts
    rle, refer.rle_mask = str_rle(12, 10, slice(3, 6), slice(1, 9))
    refer.ann(102, 2, rle)
    refer.ann(103, 1, [[1, 1, 9, 9], rect(10, 2, 14, 6)])  # first part is a 4-number polygon
    refer.ann(104, 1, [rect(-5, -5, 3, 3)])  # partly outside: clipped
    refer.ref(1, 101, 1, "val", ["dog on left", "brown dog"])
    refer.ref(2, 102, 2, "val", ["gray thing"])
    refer.ref(3, 103, 1, "testA", ["right dog"])
    refer.ref(4, 104, 1, "val", ["corner"])
    refer.ref(5, 101, 1, "train", ["train dog"])
    refer.write()
    return refer


def expected_poly_mask(h, w, polys):
    return mask_api.decode(mask_api.merge(mask_api.frPyObjects(polys, h, w)))


def test_every_sentence_is_an_item_with_its_refs_mask(refcoco):
    ds = open_dataset("refcoco|unc|val", refcoco.root)
    assert len(ds) == 4 and ds.eval_name == "refcoco|unc|val"
    first, second = ds[0], ds[1]
    assert first.queries == ["dog on left"] and second.queries == ["brown dog"]
    assert first.id == "refcoco|unc|val/1/10" and second.id == "refcoco|unc|val/1/11"
    np.testing.assert_array_equal(first.mask, second.mask)
    union = expected_poly_mask(16, 20, [rect(2, 2, 8, 8), rect(5, 5, 12, 10)])
    np.testing.assert_array_equal(first.mask, union)
    assert first.mask.max() == 1  # overlap stays 1
    assert first.image.shape == (16, 20, 3) and first.source == "refcoco"
    assert ds.category(0) == "dog"


def test_rle_str_counts_grayscale_and_clipping(refcoco):
    ds = open_dataset("refcoco", refcoco.root, "val")
    gray = ds[2]
    assert gray.image.shape == (12, 10, 3) and gray.image.dtype == np.uint8
    np.testing.assert_array_equal(gray.mask, refcoco.rle_mask)
    corner = ds[3]
    assert corner.mask[:3, :3].all() and corner.mask.shape == (16, 20)


def test_four_number_polygon_is_not_a_box(refcoco):
    item = open_dataset("refcoco", refcoco.root, "testA")[0]
    np.testing.assert_array_equal(item.mask, expected_poly_mask(16, 20, [rect(10, 2, 14, 6)]))
    assert item.mask[5, 5] == 0  # a box [1, 1, 9, 9] would have covered it


def test_ref_unit_and_unknown_split(refcoco):
    ds = RefDataset(refcoco.root, "refcoco", "val", unit="ref")
    assert len(ds) == 3 and ds[0].queries == ["dog on left", "brown dog"] and ds[0].id == "refcoco|unc|val/1"
    with pytest.raises(DatasetError, match="unknown split 'testB'; this file has testA, train, val"):
        open_dataset("refcoco", refcoco.root, "testB")
    with pytest.raises(ValueError, match="bad refer evaluation name"):
        open_dataset("refcoco|unc", refcoco.root)
    with pytest.raises(ValueError, match="unknown data set"):
        open_dataset("refclef", refcoco.root, "val")


def test_refcocog_umd_layout(refer):
    refer.image(1)
    refer.ann(101, 1, [rect(2, 2, 8, 8)])
    refer.ref(1, 101, 1, "test", ["the dog that sits"])
    refer.write("refcocog", "umd")
    ds = open_dataset("refcocog|umd|test", refer.root)
    assert ds[0].queries == ["the dog that sits"]


def test_missing_image_file_and_bad_annotations(refer):
    refer.image(1)
    refer.image(2, write=False)
    refer.ann(101, 1, [rect(2, 2, 8, 8)])
    refer.ann(102, 2, [rect(2, 2, 8, 8)])
    refer.ann(103, 1, [rect(50, 50, 60, 60)])  # entirely outside: empty target
    refer.ann(104, 1, [[1, 2, 3]])  # odd count
    refer.ref(1, 101, 1, "val", ["ok"])
    refer.ref(2, 102, 1, "val", ["no image"])
    refer.ref(3, 103, 1, "val", ["outside"])
    refer.ref(4, 104, 1, "val", ["odd"])
    refer.ref(5, 999, 1, "val", ["no ann"])
    refer.write()
    with pytest.raises(DatasetError) as info:
        open_dataset("refcoco", refer.root, "val")
    assert info.value.reason == "missing_image" and info.value.record == "ref_id 2"
    assert info.value.file.endswith("COCO_train2014_000000000002.jpg")
    ds = open_dataset("refcoco", refer.root, "val", skip_bad=True)
    assert [r["ref_id"] for r in ds.refs] == [1]
    assert ds.skips.counts == {"missing_image": 1, "empty_target": 1, "bad_polygon": 1, "missing_annotation": 1}
    assert "ref_id 5" in ds.skips.summary()


def test_lazy_errors_at_access(refer):
    refer.image(1)
    refer.ann(103, 1, [rect(50, 50, 60, 60)])
    refer.ref(3, 103, 1, "val", ["outside"])
    refer.write()
    ds = open_dataset("refcoco", refer.root, "val")
    with pytest.raises(DatasetError, match="empty_target") as info:
        ds[0]
    assert info.value.file.endswith("instances.json") and info.value.record == "ref_id 3"


def test_restricted_unpickler(tmp_path):
    plain = tmp_path / "refs(unc).p"
    refs = [{"ref_id": 1, "split": "val", "sentences": [{"sent": "caf\u00e9"}]}]
    plain.write_bytes(pickle.dumps(refs, protocol=2))
    assert load_refs(plain) == refs
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps([{"x": print}], protocol=2))
    with pytest.raises(DatasetError, match="refused global .*print"):
        load_refs(evil)
    truncated = tmp_path / "cut.p"
    truncated.write_bytes(pickle.dumps(refs, protocol=2)[:-5])
    with pytest.raises(DatasetError, match="cannot read refs pickle"):
        load_refs(truncated)
