"""keyseg_core.speech.vocabulary: the phrasings and keywords recognition is biased toward."""

from __future__ import annotations

import json

import pytest

from keyseg_core.config.default_keywords import COCO_CATEGORIES
from keyseg_core.speech.vocabulary import QueryVocabulary, arpa_language_model, normalize


def test_default_covers_every_coco_keyword_in_several_phrasings():
    vocab = QueryVocabulary.default()
    corpus = set(vocab.corpus())
    assert set(vocab.keywords) == set(COCO_CATEGORIES)
    for keyword in COCO_CATEGORIES:
        assert keyword in corpus and f"where is the {keyword}" in corpus
    assert "which object is used for sleeping" in corpus
    assert all(s == normalize(s) and "{" not in s for s in corpus)


def test_a_table_from_elsewhere_replaces_the_default(tmp_path):
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"phrases": ["grab the {keyword}", "the {keyword} beside the {other}"],
                                "keywords": ["Screwdriver", "drill", "hammer"]}))
    vocab = QueryVocabulary.from_file(path)
    corpus = vocab.corpus()
    assert "grab the screwdriver" in corpus and "screwdriver" in corpus
    assert any(s.startswith("the drill beside the ") for s in corpus)
    assert not any("cup" in s for s in corpus)
    (tmp_path / "lines.txt").write_text("# comment\nhand me the {keyword}\nstop\n")
    lines = QueryVocabulary.from_file(tmp_path / "lines.txt")
    assert "stop" in lines.corpus() and "hand me the teddy bear" in lines.corpus()
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="phrases"):
        QueryVocabulary.from_file(tmp_path / "bad.yaml")


def test_keywords_are_found_whole_and_longest_first():
    vocab = QueryVocabulary.default()
    assert vocab.keywords_in("where is the Teddy-Bear?") == ["teddy bear"]
    assert vocab.keywords_in("the cup on the dining table") == ["dining table", "cup"]
    assert vocab.keywords_in("a cupboard") == []


def test_language_model_is_arpa_with_sentence_marks():
    arpa = arpa_language_model(["the cup", "the red cup", "where is the cup"])
    assert "\\data\\" in arpa and "<s>" in arpa and "</s>" in arpa and "\\3-grams:" in arpa
