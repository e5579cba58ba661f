import json

import pytest

from keyseg_core.keywords import NormalizeConfig, clean, normalize, parse_answer, singularize
from keyseg_core.keywords.normalize import load_synonyms


@pytest.mark.parametrize("text, expected", [
    ("The Swim-Cap!", "swim-cap"), ("  an   apple. ", "apple"), ("'Dog'", "dog"),
    ("the the chair", "chair"), ("children\u2019s toys", "children's toys"), ("a", ""),
])
def test_clean(text, expected):
    assert clean(text) == expected


@pytest.mark.parametrize("plural, singular", [
    ("dogs", "dog"), ("swim caps", "swim cap"), ("berries", "berry"), ("cookies", "cookie"), ("boxes", "box"),
    ("benches", "bench"), ("dresses", "dress"), ("horses", "horse"), ("houses", "house"), ("knives", "knife"),
    ("people", "person"), ("shoes", "shoe"), ("tomatoes", "tomato"), ("buses", "bus"), ("glasses", "glasses"),
    ("scissors", "scissors"), ("bus", "bus"), ("glass", "glass"), ("cactus", "cactus"), ("tennis", "tennis"),
    ("bottles of water", "bottle of water"), ("sheep", "sheep"), ("ties", "tie"), ("gloves", "glove"),
])
def test_singularize(plural, singular):
    assert singularize(plural) == singular


@pytest.mark.parametrize("answer, keyword, reason", [
    ("The Umbrellas", "umbrella", None),
    ("", None, "empty"),
    ("the", None, "empty"),
    ("a big red wooden chair", None, "too_many_words"),
    ("supercalifragilisticexpialidocious-thing", None, "too_long"),
    ("cup of", None, "incomplete"),
    ("object", None, "generic"),
    ("dog dog", None, "redundant"),
])
def test_normalize_and_drop_reasons(answer, keyword, reason):
    result = normalize(answer, NormalizeConfig(max_words=3, max_chars=30))
    assert (result.keyword, result.dropped) == (keyword, reason)


def test_synonyms_yaml_json_and_validation(tmp_path):
    yml = tmp_path / "syn.yaml"
    yml.write_text("Couch: sofa\nTV set: television\nmobile phones: cell phone\n")
    synonyms = load_synonyms(yml)
    config = NormalizeConfig(synonyms=synonyms)
    assert normalize("the couches", config).keyword == "sofa"  # singularised, then mapped
    assert normalize("TV set", config).keyword == "television" and normalize("TV set", config).synonym
    assert normalize("Mobile Phones", config).keyword == "cell phone"
    js = tmp_path / "syn.json"
    js.write_text(json.dumps({"sofa": "couch", "couch": "settee"}))
    with pytest.raises(ValueError, match="'sofa' maps to 'couch', which is itself mapped"):
        load_synonyms(js)
    js.write_text(json.dumps({"sofa": 3}))
    with pytest.raises(ValueError, match="entry 'sofa' must map to a non-empty string"):
        load_synonyms(js)
    with pytest.raises(ValueError, match="max_words must be >= 1"):
        NormalizeConfig(max_words=0)


@pytest.mark.parametrize("output, answer", [
    ('The most important object is "the umbrella" because it shades.', "the umbrella"),
    ('The most important object is "the swim cap."', "the swim cap"),
    ("Keyword: Dog.\nmore text", "Dog"),
    ("\n\n  bed  \n", "bed"),
    ("The key object in this text is \u201cchair\u201d", "chair"),
    ("The swimmer's cap", "The swimmer's cap"),
])
def test_parse_answer(output, answer):
    assert parse_answer(output) == answer
