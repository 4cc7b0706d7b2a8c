"""Reading a query without the encoder: relations, sides, superlatives, attributes, typos."""

import pytest

from tinyserve_core.scene.phrases import Vocabulary, parse


@pytest.fixture(scope="module")
def vocab():
    scene = {"red", "mug", "lamp", "desk", "table", "ball", "chair", "books", "stack"}
    return Vocabulary(scene, {"piano", "bed", "cat", "map", "bots"}, known={"lamb", "eat", "piano", "bed", "the"})


def test_relation_splits_head_and_reference():
    p = parse("Where is the mug on the table?")
    assert (p.head, p.relation, p.ref) == ("mug", "on", "the table") and not p.generic


def test_longest_relation_phrase_wins():
    p = parse("the lamp on top of the table")
    assert p.relation == "on" and p.ref == "the table" and p.head == "lamp"
    assert parse("the chair next to the table").relation == "near"
    assert parse("the thing underneath the lamp").relation == "under"


def test_a_relation_word_with_nothing_after_it_is_just_a_word():
    p = parse("something to sit on")
    assert p.relation == "" and p.head == "something to sit on"


def test_generic_heads_are_answered_by_filters():
    p = parse("what is on the table")
    assert p.generic and p.relation == "on"
    p = parse("Which object is made of rubber?")
    assert p.generic and p.materials == {"rubber"}
    p = parse("the red thing")
    assert p.generic and p.colours == {"red"}
    assert not parse("the red mug").generic


def test_sides_superlatives_and_size_words():
    p = parse("the box on the left")
    assert p.side == "left" and p.relation == "" and p.head == "box"
    assert parse("the biggest box").superlative == ("volume", 1)
    assert parse("the tallest object").superlative == ("height", 1)
    p = parse("the small box")
    assert p.size_word == ("volume", -1) and p.superlative is None and p.head == "box"
    assert parse("the box to the left of the chair").relation == "left"


def test_fallback_head_keeps_the_relation_words():
    p = parse("an orange cone used on roads")
    assert p.relation == "on" and p.ref == "roads"
    again = parse(p.without_relation, relations=False)
    assert again.relation == "" and "roads" in again.head and again.colours == {"orange"}


def test_typos_are_corrected_against_the_vocabulary(vocab):
    p = parse("the red mgu", vocab)
    assert p.text == "the red mug" and p.corrections == {"mgu": "mug"}
    assert vocab.correct("chiar") == "chair"
    assert vocab.correct("lmap") == "lamp"  # a swap beats a dropped letter ("map" is one edit too)
    assert vocab.correct("teh") == "the"
    # at equal distance and likeness, this scene's word beats an absent concept
    assert Vocabulary({"plank"}, {"blank"}, known=set()).correct("qlank") == "plank"
    assert Vocabulary({"blank"}, {"plank"}, known=set()).correct("qlank") == "blank"
    assert vocab.correct("pianno") == "piano"  # an absent concept stays absent
    assert vocab.correct("lamb") == "lamb" and vocab.correct("eat") == "eat"  # real words are not typos
    assert vocab.correct("xylophone") == "xylophone"  # nothing close: left alone
