"""VQA reader: a plain LLaVA-Instruct JSON plus an image folder; bad records name the file and record."""

import json

import numpy as np
import pytest
from PIL import Image

from keyseg_core.data import DatasetError, open_dataset
from keyseg_core.data.vqa import VqaDataset


def write_vqa(root, records, images=("a.jpg", "b.jpg")):
    (root / "coco" / "train2017").mkdir(parents=True, exist_ok=True)
    for name in images:
        Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(root / "coco" / "train2017" / name)
    path = root / "llava_dataset" / "llava_instruct_150k.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def turn(role, text):
    return {"from": role, "value": text}


GOOD = [
    {"id": "1", "image": "a.jpg", "conversations": [turn("human", "<image>\nWhat is shown?"), turn("gpt", "A wall."),
                                                    turn("human", "What colour?"), turn("gpt", "Grey.")]},
    {"id": "2", "image": "b.jpg", "conversations": [turn("gpt", "(a stray opening)"),
                                                    turn("human", "Describe it.\n<image>"), turn("gpt", "Flat grey.")]},
]


def test_lisa_layout_turns_and_placeholder(tmp_path):
    write_vqa(tmp_path, GOOD)
    ds = open_dataset("vqa", tmp_path, "llava_instruct_150k")
    assert len(ds) == 2
    first = ds[0]
    assert first.turns == [("What is shown?", "A wall."), ("What colour?", "Grey.")]
    assert first.image.shape == (12, 16, 3) and first.id == "vqa/1" and first.source == "vqa"
    assert ds[1].turns == [("Describe it.", "Flat grey.")]  # leading gpt turn dropped, <image> at the end removed


def test_plain_file_and_folder_anywhere(tmp_path):
    path = write_vqa(tmp_path, GOOD)
    ds = open_dataset("vqa", "/unused", "train", json=path, image_dir=tmp_path / "coco" / "train2017")
    assert [s.turns[0][0] for s in (ds[0], ds[1])] == ["What is shown?", "Describe it."]


@pytest.mark.parametrize("record, reason", [
    ({"id": "x", "conversations": [turn("human", "<image>\nq"), turn("gpt", "a")]}, "no_image"),
    ({"id": "x", "image": "a.jpg", "conversations": [turn("human", "<image>\nq")]}, "bad_conversation"),
    ({"id": "x", "image": "a.jpg", "conversations": [turn("human", "<image>\nq"), turn("human", "a")]},
     "bad_conversation"),
    ({"id": "x", "image": "a.jpg", "conversations": [turn("human", "<image>"), turn("gpt", "a")]}, "bad_conversation"),
    ({"id": "x", "image": "missing.jpg", "conversations": [turn("human", "<image>\nq"), turn("gpt", "a")]},
     "missing_image"),
])
def test_bad_records_are_named_or_counted(tmp_path, record, reason):
    path = write_vqa(tmp_path, GOOD + [record])
    json_path, images = path, tmp_path / "coco" / "train2017"
    with pytest.raises(DatasetError) as info:
        VqaDataset(json_path, images, validate=True)
    assert info.value.reason == reason and str(path) in str(info.value) and "id x" in str(info.value)
    skipping = VqaDataset(json_path, images, skip_bad=True)
    assert len(skipping) == 2 and skipping.skips.counts == {reason: 1}


def test_not_a_list(tmp_path):
    path = tmp_path / "v.json"
    path.write_text('{"conversations": []}')
    with pytest.raises(DatasetError, match="list of LLaVA-Instruct records"):
        VqaDataset(path, tmp_path)
