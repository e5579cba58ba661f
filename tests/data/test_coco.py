import json

import pytest

from keyseg_core.data import DatasetError, open_dataset


def rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


@pytest.fixture
def coco(tmp_path, image_writer):
    write_image = image_writer
    root = tmp_path / "coco"
    write_image(root / "val2017" / "000000000001.jpg", 16, 20)
    write_image(root / "val2017" / "000000000002.jpg", 10, 10, mode="L")
    data = {
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "height": 16, "width": 20},
            {"id": 2, "file_name": "000000000002.jpg", "height": 10, "width": 10},
        ],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 18, "segmentation": [rect(1, 1, 4, 4)], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 18, "segmentation": [rect(10, 10, 14, 14)], "iscrowd": 0},
            {"id": 13, "image_id": 1, "category_id": 1, "segmentation": [rect(5, 5, 8, 8)], "iscrowd": 0},
            {"id": 21, "image_id": 2, "category_id": 1, "segmentation": [rect(0, 0, 3, 3)], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return root, data


def test_category_unit_merges_instances(coco):
    root, _ = coco
    ds = open_dataset("coco", root, "val2017")
    assert [ds[i].id for i in range(len(ds))] == ["coco/1/1", "coco/1/18", "coco/2/1"]
    dogs = ds[1]
    assert dogs.queries == ["dog"] and dogs.keyword == "dog" and not dogs.is_sentence
    assert dogs.mask[2, 2] == 1 and dogs.mask[12, 12] == 1 and dogs.mask[6, 6] == 0
    assert ds[2].image.shape == (10, 10, 3)


def test_annotation_unit(coco):
    root, _ = coco
    ds = open_dataset("coco", root, "val2017", unit="annotation")
    assert len(ds) == 4 and ds[1].id == "coco/1/18/11" and ds[1].mask[12, 12] == 0


def test_unknown_category_and_size_mismatch(coco):
    root, data = coco
    data["annotations"].append({"id": 31, "image_id": 1, "category_id": 99, "segmentation": [rect(1, 1, 4, 4)]})
    data["images"][1]["height"] = 11
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="category_id 99"):
        open_dataset("coco", root, "val2017")
    ds = open_dataset("coco", root, "val2017", skip_bad=True)
    assert ds.skips.counts == {"unknown_category": 1} and len(ds) == 3
    with pytest.raises(DatasetError, match="size_mismatch") as info:
        ds[2]
    assert info.value.file.endswith("000000000002.jpg")
