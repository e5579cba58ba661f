"""Reason-Seg-Key builder end to end: the offline SmolLM2 on 4 samples, then fake extractors for
resume-after-crash, overrides and error cases (fast)."""

import hashlib
import json
from pathlib import Path

import pytest

from keyseg_core.cli.app import main
from keyseg_core.data import open_dataset, read_keyword_file
from keyseg_core.keywords import KeywordBuildConfig, build_keywords

QUERIES = {
    "a_pool": ("What keeps a swimmer's hair dry?", "The swim cap keeps the swimmer's hair dry."),
    "b_room": ("Which object in this room is used for sleeping?", "The bed is used for sleeping."),
    "c_park": ("What could shade the picnic table?", ""),
    "d_desk": ("What could cut this paper?", "The scissors on the desk can cut the paper."),
}


@pytest.fixture
def dataset(reasonseg):
    for stem, (query, _) in QUERIES.items():
        reasonseg.add("train", stem, text=[query, query + " (paraphrase)"])
    reasonseg.add("val", "v1")
    reasonseg.explanatory(
        [{"image": f"{s}.jpg", "json": f"{s}.json", "query": q, "outputs": o} for s, (q, o) in QUERIES.items() if o]
    )
    return reasonseg


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def smol(dataset, out, *extra):
    return main(
        [
            "keywords",
            "--reasonseg",
            str(dataset.root),
            "--out",
            str(out),
            "--extractor",
            "offline:smollm2-135m-instruct",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "8",
            "--save-every",
            "1",
            "--no-progress",
            *extra,
        ]
    )


def test_smollm2_end_to_end_and_resume_after_interruption(dataset, tmp_path, capsys):
    before = tree_digest(dataset.root)
    full = tmp_path / "full"
    assert smol(dataset, full) == 0
    printed = capsys.readouterr().out
    assert "most frequent keywords" in printed and "dropped" in printed
    path = full / "reason_seg" / "ReasonSeg" / "explanatory_key" / "keyword_outputs.json"
    rows = json.loads(path.read_text())
    assert rows and {tuple(sorted(r)) for r in rows} == {("image", "json", "keyword", "outputs", "query")}
    report = json.loads((full / "keyword_report.json").read_text())
    assert report["written"] + sum(report["dropped"].values()) == 4 == report["samples"]
    for row in rows:
        assert row["keyword"] == row["keyword"].lower().strip() and row["json"] == row["image"][:-4] + ".json"
    assert tree_digest(dataset.root) == before  # input untouched
    # the output root is a complete data root whose train items carry the keywords
    train = open_dataset("reasonseg", full, "train")
    assert {train[i].keyword for i in range(len(train))} - {None} == {r["keyword"] for r in rows}
    assert len(open_dataset("reasonseg", full, "val")) == 1

    # interrupted after one batch, then resumed: byte-identical file
    part = tmp_path / "part"
    assert smol(dataset, part, "--limit", "2") == 0
    assert not (part / "reason_seg" / "ReasonSeg" / "explanatory_key" / "keyword_outputs.json").exists()
    assert len(json.loads((part / "keyword_progress.json").read_text())["raw"]) == 2
    assert smol(dataset, part, "--resume") == 0
    assert (part / "reason_seg/ReasonSeg/explanatory_key/keyword_outputs.json").read_bytes() == path.read_bytes()


class FakeExtractor:
    """Deterministic answers; optionally crashes on its n-th call like a killed process."""

    ANSWERS = {
        "swim cap": 'The most important object is "Swim Caps"',
        "bed": "The bed.",
        "shade": "object",
        "scissors": "Scissors",
    }

    def __init__(self, crash_on_call: int | None = None):
        self.calls = 0
        self.crash_on_call = crash_on_call

    def __call__(self, texts):
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise KeyboardInterrupt("simulated interruption")
        return [next(a for k, a in self.ANSWERS.items() if k in t.lower()) for t in texts]


def config(dataset, out, **kw):
    return KeywordBuildConfig(reasonseg=dataset.root, out=out, extractor="fake", batch_size=1, save_every=1, **kw)


def test_crash_then_resume_matches_uninterrupted_run(dataset, tmp_path):
    clean_report = build_keywords(config(dataset, tmp_path / "a"), FakeExtractor(), progress=False)
    with pytest.raises(KeyboardInterrupt):
        build_keywords(config(dataset, tmp_path / "b"), FakeExtractor(crash_on_call=3), progress=False)
    saved = json.loads((tmp_path / "b" / "keyword_progress.json").read_text())["raw"]
    assert sorted(saved) == ["a_pool", "b_room"]
    resumed = FakeExtractor()
    report = build_keywords(config(dataset, tmp_path / "b", resume=True), resumed, progress=False)
    assert resumed.calls == 2  # only the two missing samples went to the model
    kw = "reason_seg/ReasonSeg/explanatory_key/keyword_outputs.json"
    assert (tmp_path / "a" / kw).read_bytes() == (tmp_path / "b" / kw).read_bytes()
    assert report.written == clean_report.written == 3
    entries = read_keyword_file(tmp_path / "a" / kw)
    assert {s: e.keyword for s, e in entries.items()} == {"a_pool": "swim cap", "b_room": "bed", "d_desk": "scissors"}
    assert entries["a_pool"].outputs == QUERIES["a_pool"][1] and entries["a_pool"].query == QUERIES["a_pool"][0]
    assert report.dropped == {"generic": 1} and report.dropped_samples[0]["stem"] == "c_park"
    assert report.changed == 2  # "Swim Caps" -> "swim cap", "The bed" -> "bed"; "Scissors" only lowercased


def test_overrides_synonyms_and_refusals(dataset, tmp_path):
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("c_park.jpg: Umbrella\n")
    synonyms = tmp_path / "synonyms.json"
    synonyms.write_text(json.dumps({"scissors": "shears"}))
    fake = FakeExtractor()
    report = build_keywords(
        config(dataset, tmp_path / "o", overrides=overrides, synonyms=synonyms), fake, progress=False
    )
    assert fake.calls == 3  # the overridden sample never reaches the model
    assert (report.overridden, report.synonyms, report.written, dict(report.dropped)) == (1, 1, 4, {})
    assert dict(report.top)["umbrella"] == 1 and dict(report.top)["shears"] == 1
    assert "overridden by hand: 1" in report.summary()

    with pytest.raises(ValueError, match="keyword_progress.json exists; pass --resume"):
        build_keywords(config(dataset, tmp_path / "o"), FakeExtractor(), progress=False)
    with pytest.raises(ValueError, match="different settings"):
        build_keywords(config(dataset, tmp_path / "o", resume=True, text="query"), FakeExtractor(), progress=False)
    assert (
        build_keywords(config(dataset, tmp_path / "o", overwrite=True), FakeExtractor(), progress=False).overridden == 0
    )
    overrides.write_text("nope: chair\n")
    with pytest.raises(ValueError, match="override entry 'nope' names no training sample"):
        build_keywords(config(dataset, tmp_path / "x", overrides=overrides), FakeExtractor(), progress=False)
    with pytest.raises(ValueError, match="the input is never modified"):
        build_keywords(config(dataset, dataset.dir / "inside"), FakeExtractor(), progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        KeywordBuildConfig(dataset.root, tmp_path / "y", batch_size=0)


def test_limit_then_resume_and_text_modes(dataset, tmp_path):
    assert build_keywords(config(dataset, tmp_path / "l", limit=1), FakeExtractor(), progress=False) is None
    report = build_keywords(config(dataset, tmp_path / "l", resume=True), FakeExtractor(), progress=False)
    assert report.written == 3
    seen = []
    build_keywords(
        config(dataset, tmp_path / "q", text="query"), lambda t: seen.extend(t) or ["bed"] * len(t), progress=False
    )
    assert seen[0] == QUERIES["a_pool"][0]
    with pytest.raises(ValueError, match="c_park.*no explanation"):
        build_keywords(config(dataset, tmp_path / "r", text="outputs"), FakeExtractor(), progress=False)


def test_keywords_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        main(["keywords", "--help"])
    assert "--resume" in capsys.readouterr().out


@pytest.mark.parametrize("link", ["copy", "none"])
def test_link_modes(dataset, tmp_path, link):
    out = tmp_path / link
    build_keywords(config(dataset, out, link=link), FakeExtractor(), progress=False)
    folder = out / "reason_seg" / "ReasonSeg"
    keyword_file = folder / "explanatory_key" / "keyword_outputs.json"
    if link == "copy":
        assert (folder / "train").is_dir() and not (folder / "train").is_symlink()
        assert open_dataset("reasonseg", out, "train")[0].keyword == "swim cap"
    else:
        assert sorted(p.name for p in folder.iterdir()) == ["explanatory_key"]
        assert open_dataset("reasonseg", dataset.root, "train", keywords=keyword_file)[0].keyword == "swim cap"
