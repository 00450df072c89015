"""Plan drawing, filters (incl. LSH near-duplicates) and the shirker subset: pure logic, no model."""
import random

import pytest
from rapidfuzz.distance import Indel

from helpers.generate.filters import NearDuplicateIndex, filter_examples, rouge_l_f1
from helpers.generate.sampling import derive_seed, draw_plan, pair_report, repeated_pairs, unique_skills
from helpers.generate.shirkers import choose_shirkers, shirker_count

SKILLS = [f"skill_{i}" for i in range(30)]
QTYPES = [{"name": n, "definition": "d", "examples": []} for n in ("A", "B", "C")]


def test_plan_is_deterministic_distinct_and_balanced():
    a = draw_plan(SKILLS, QTYPES, 30, 2, seed=7)
    b = draw_plan(SKILLS, QTYPES, 30, 2, seed=7)
    assert [(p.skills, p.query_type["name"]) for p in a] == [(p.skills, p.query_type["name"]) for p in b]
    assert all(len(set(p.skills)) == 2 for p in a)
    counts = {n: sum(p.query_type["name"] == n for p in a) for n in "ABC"}
    assert counts == {"A": 10, "B": 10, "C": 10}  # spread evenly
    c = draw_plan(SKILLS, QTYPES, 30, 2, seed=8)
    assert [p.skills for p in a] != [p.skills for p in c]
    assert a[0].example_id == "train-00000" and a[0].skills_joined_str == ", ".join(a[0].skills)


def test_heldout_seed_differs_and_duplicates_in_skill_list_are_ignored():
    assert derive_seed(42, "heldout") != 42 and derive_seed(42, "heldout") == derive_seed(42, "heldout")
    assert unique_skills(["a", "b", "a", " ", "c"]) == ["a", "b", "c"]
    with pytest.raises(ValueError):
        draw_plan(["a", "a"], QTYPES, 1, 2, seed=0)


def test_repeated_pairs_counts_unordered_repeats():
    plans = draw_plan(["a", "b", "c"], QTYPES, 10, 2, seed=1)  # only 3 pairs exist
    assert repeated_pairs(plans) == 10 - len({p.pair_key for p in plans})
    report = pair_report(plans[:5], plans[5:])
    assert set(report) == {"train", "heldout", "shared_train_heldout"}


def _ex(i, instruction, output="answer", truncated=False):
    return {"example_id": f"train-{i:05d}", "instruction": instruction, "output": output, "truncated": truncated}


def test_filters_each_counted():
    exs = [
        _ex(0, "How do I plan a garden with tomatoes and basil this spring?"),
        _ex(1, "Too short"),
        _ex(2, "How do I plan a garden with tomatoes and basil this spring?"),           # exact
        _ex(3, "how do i plan a garden with tomatoes and basil this spring"),            # exact after normalising
        _ex(4, "How do I plan a small garden with tomatoes and basil this spring?"),     # near
        _ex(5, "Explain the rules of chess castling to a beginner, with an example.", output="  "),
        _ex(6, "Explain how volcanoes form and why some erupt explosively.", truncated=True),
        _ex(7, " ".join(["word"] * 50)),
        _ex(8, "Compare two methods for learning Spanish vocabulary quickly at home."),
    ]
    out = filter_examples(exs, min_words=3, max_words=40, drop_truncated=True, dedup_threshold=0.7)
    assert [e["example_id"] for e in out.kept] == ["train-00000", "train-00008"]
    assert out.counts == {"empty_response": 1, "truncated": 1, "instruction_too_short": 1,
                          "instruction_too_long": 1, "exact_duplicate": 2, "near_duplicate": 1}
    assert out.dropped["near_duplicate"][0]["duplicate_of"] == "train-00000"
    keep_trunc = filter_examples(exs, min_words=3, max_words=40, drop_truncated=False, dedup_threshold=1.0)
    assert keep_trunc.counts["truncated"] == 0 and keep_trunc.counts["near_duplicate"] == 0


def test_filter_against_other_split():
    train = [_ex(0, "What is the best way to learn the violin as an adult?")]
    held = [{**_ex(1, "What is the best way to learn the violin as an adult?"), "example_id": "heldout-00000"},
            {**_ex(2, "Describe three causes of the French Revolution briefly."), "example_id": "heldout-00001"}]
    out = filter_examples(held, against=train, min_words=1, max_words=99, drop_truncated=True, dedup_threshold=0.7)
    assert [e["example_id"] for e in out.kept] == ["heldout-00001"]
    assert out.dropped["exact_duplicate"][0]["duplicate_of"] == "train-00000"


def test_lsh_finds_what_brute_force_finds():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(400)]
    base = [" ".join(rng.sample(vocab, 20)) for _ in range(150)]
    texts = list(base)
    for t in base[:40]:  # near-duplicates: change 2 of 20 words
        words = t.split()
        for j in rng.sample(range(20), 2):
            words[j] = rng.choice(vocab)
        texts.append(" ".join(words))
    index = NearDuplicateIndex(0.7)
    lsh_pairs, brute_pairs = set(), set()
    for i, t in enumerate(texts):
        lsh_pairs |= {(j, i) for j in index.find(t)}
        brute_pairs |= {(j, i) for j in range(i) if rouge_l_f1(texts[j], t) >= 0.7}
        index.add(i, t)
    assert len(brute_pairs) >= 40
    assert lsh_pairs == brute_pairs
    assert rouge_l_f1("a b c d", "a b c d") == 1.0 and rouge_l_f1("a b", "c d") == 0.0


def test_texts_compared_as_one_character_per_word_score_as_their_words():
    """The index compares texts written one character per distinct word (rapidfuzz's fast path): the scores are
    those of the word sequences, also past the 55,000 words after which Unicode's surrogates are skipped."""
    from helpers.generate.filters import word_string, words

    many = [f"word{i}" for i in range(60_000)]
    assert word_string(many).encode("utf-8")  # no surrogate among them
    rng = random.Random(1)
    for _ in range(200):
        a, b = (" ".join(rng.choices(many[-200:] + ["the", "plan"], k=rng.randint(0, 15))) for _ in range(2))
        assert Indel.normalized_similarity(word_string(words(a)), word_string(words(b))) == rouge_l_f1(a, b)


def test_shirkers_exact_reproducible_and_nested():
    ids = [f"train-{i:05d}" for i in range(1000)]
    s10, s20, s50 = (choose_shirkers(ids, f, seed=3) for f in (0.1, 0.2, 0.5))
    assert (len(s10), len(s20), len(s50)) == (100, 200, 500)
    assert set(s10) <= set(s20) <= set(s50)
    assert s20 == choose_shirkers(ids, 0.2, seed=3) and s20 != choose_shirkers(ids, 0.2, seed=4)
    assert shirker_count(7, 0.5) == 4 and shirker_count(10, 0.0) == 0
