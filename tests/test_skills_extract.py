"""Both extraction routes through the real LLM client with a scripted fake teacher, plus import and fallbacks."""
import json
import re
from pathlib import Path

import pytest

from helpers.llm.client import connect_function
from helpers.params import ParameterError
from helpers.runs import Run
from helpers.skills.extract import SkillExtractionConfig, extract_skills, record_extraction, save_extraction
from helpers.skills.routes import match_cluster

FIXTURES = Path(__file__).parent / "fixtures" / "skills"

TOPICS_REPLY = "Sure! Here are some topics:\n1. **Cooking**\n2. Programming - writing code\n3. Travel\n4. Gardening\nEnjoy!"
SKILL_REPLIES = {
    "cooking": "1. knife_skills\n2. **Recipe Scaling**: adjusting quantities\n- knife skills\n3. Knife Skills\n\nThat's all.",
    "programming": "- debugging\n- code_review\n- unit_testing\n- Debugging.",
    "travel": "",
}
QUERY_REPLY = ('1. **Information-Seeking**: wants facts.\n- "What is X?"\n- "Why Y?"\n'
               '2. **Planning**: wants a plan.\n- "Plan a trip"\n- "Plan a week"\n')


def direct_teacher(messages, sampling):
    text = messages[-1]["content"]
    if "distinct topics" in text:
        return TOPICS_REPLY
    if "on the topic" in text:
        return SKILL_REPLIES[re.search(r'topic "([^"]+)"', text).group(1)]
    if "kinds of queries" in text:
        return QUERY_REPLY
    raise AssertionError(f"unexpected prompt: {text[:80]}")


def client_for(fn, tmp_path):
    return connect_function(fn, model="fake-teacher", stage="extract_skills", cache_path=tmp_path / "calls.sqlite")


def test_direct_route_from_malformed_replies(tmp_path):
    cfg = SkillExtractionConfig(num_topics=3, skills_per_topic=5, num_query_types=2, dedup_method="exact")
    result = extract_skills(cfg, client_for(direct_teacher, tmp_path))
    assert result.topics == ["cooking", "programming", "travel"]
    assert [(s["skill"], s["topic"]) for s in result.skills] == [
        ("knife_skills", "cooking"), ("recipe_scaling", "cooking"),
        ("debugging", "programming"), ("code_review", "programming"), ("unit_testing", "programming")]
    assert [q["name"] for q in result.query_types] == ["Information-Seeking", "Planning"]
    report = result.parse_report
    assert report.dropped["prose around the list"] == 3  # two lines around the topic list, one after a skill list
    assert report.dropped["beyond NUM_TOPICS"] == 1
    assert report.dropped["duplicate within the reply"] == 3
    assert report.empty_replies == 1  # the travel reply
    summary = result.summary()
    assert summary["num_teacher_calls"] == 5 and summary["num_fallback_skills"] == 0
    assert summary["num_raw_skills"] == 5 and summary["num_dropped_lines"] == report.num_dropped


def test_direct_route_merges_near_duplicates_across_topics(tmp_path):
    replies = {"cooking": "1. meal_planning\n2. knife_skills", "programming": "1. meal_planing\n2. debugging",
               "travel": "1. itinerary_planning"}

    def teacher(messages, sampling):
        text = messages[-1]["content"]
        if "on the topic" in text:
            return replies[re.search(r'topic "([^"]+)"', text).group(1)]
        return direct_teacher(messages, sampling)

    cfg = SkillExtractionConfig(num_topics=3, dedup_method="fuzzy", skill_dedup_threshold=0.9)
    result = extract_skills(cfg, client_for(teacher, tmp_path))
    assert [s["skill"] for s in result.skills] == ["meal_planning", "knife_skills", "debugging", "itinerary_planning"]
    assert result.skills[0]["merged_count"] == 2 and result.skills[0]["merged_from"] == ["meal_planing"]
    assert result.summary()["num_duplicates_merged"] == 1


def test_tiny_teacher_triggers_visible_fallback(tmp_path):
    def useless(messages, sampling):
        return "The need for information in daily life is a particular example of a diverse and relatable need."

    cfg = SkillExtractionConfig(num_topics=2, skills_per_topic=3, num_query_types=2, dedup_method="exact")
    result = extract_skills(cfg, client_for(useless, tmp_path))
    summary = result.summary()
    assert summary["num_fallback_topics"] == 2 and summary["num_fallback_skills"] == 2
    assert summary["num_fallback_query_types"] == 1 and len(result.query_types) == 1
    assert {s["source"] for s in result.skills} == {"fallback"}
    assert any(n.startswith("FALLBACK") for n in result.notes)
    with pytest.raises(ParameterError, match="FALLBACK"):
        extract_skills(SkillExtractionConfig(num_topics=2, fallback="none"), client_for(useless, tmp_path))


def dataset_teacher(messages, sampling):
    text = messages[-1]["content"]
    if "single most important fine-grained skill" in text:
        request = re.search(r"<request>\n(.*)\n</request>", text, re.S).group(1)
        if "poem" in request or "haiku" in request:
            return "Skill: poetry_writing"
        if "French" in request:
            return "**translation**"
        if "focused" in request:
            return ""  # an empty reply: this instruction gets no label
        return "classification_of_animals"
    if "Group skills" in text:
        if "translation" in text:  # first batch: [translation, poetry_writing]
            return "Clusters:\ncreative_writing: poetry_writing\nlanguage_work: translation, dancing"
        return "I could not find any groups."  # second batch: [classification_of_animals]
    if "Which one of these skills" in text:
        if "French" in text:
            return "The answer is language_work."
        if "Gecko" in text:
            return "no idea"
        return "creative writing"
    if "kinds of queries" in text:
        return QUERY_REPLY
    raise AssertionError(f"unexpected prompt: {text[:80]}")


def test_dataset_route_label_cluster_relabel(tmp_path):
    instructions = [
        {"id": 0, "instruction": "Give three tips for staying focused while studying."},
        {"id": 1, "instruction": "Translate the sentence into French.\n\nThe library opens at nine."},
        {"id": 2, "instruction": "Write a haiku about the sea."},
        {"id": 3, "instruction": "Classify the animal as mammal or reptile.\n\nGecko"},
        {"id": 4, "instruction": "Write a poem about rain."},
    ]
    cfg = SkillExtractionConfig(skill_source="dataset", num_query_types=2, cluster_batch_size=2,
                                dedup_method="exact")
    result = extract_skills(cfg, client_for(dataset_teacher, tmp_path), instructions=instructions)
    skills = {s["skill"]: s for s in result.skills}
    assert set(skills) == {"creative_writing", "language_work", "classification_of_animals"}
    assert skills["creative_writing"]["merged_count"] == 1 and skills["creative_writing"]["source"] == "dataset"
    assert result.parse_report.dropped["cluster member is not a known label"] == 1  # "dancing"
    assert any("not placed in any cluster" in n for n in result.notes)  # classification_of_animals kept alone
    assert result.parse_report.empty_replies == 1
    assert len(result.instruction_labels) == 4
    final = {row["id"]: row["final_skill"] for row in result.instruction_labels}
    assert final[1] == "language_work" and final[2] == "creative_writing" and final[4] == "creative_writing"
    assert final[3] == "classification_of_animals"  # unusable relabel reply: kept its own label's cluster
    assert sum(result.coverage.values()) == 4
    assert result.summary()["num_seed_instructions"] == 5 and result.summary()["num_labelled_instructions"] == 4
    assert result.coverage["creative_writing"] == 2
    assert any("no usable label" in n for n in result.notes)
    assert result.parse_report.dropped["relabel reply names no cluster (kept the label's own cluster)"] == 1


def test_import_route_needs_no_teacher_and_saves_everything(tmp_path):
    cfg = SkillExtractionConfig(skill_source="import", skills_path=str(FIXTURES / "skills_plain.txt"),
                                query_types_path=str(FIXTURES / "queries_definition_style.txt"),
                                topic_headers="none", dedup_method="exact")
    result = extract_skills(cfg, client=None)
    assert result.summary()["num_skills"] == 7 and result.summary()["num_duplicates_merged"] == 2
    assert result.import_reports["skills"]["duplicate_lines"] == 2
    run = Run(tmp_path / "run")
    run.begin_stage("extract_skills", cfg.as_params())
    paths = save_extraction(run, result)
    record_extraction(run, result)
    results = run.results()["extract_skills"]
    for key in ("num_skills", "num_query_types", "num_raw_skills", "num_duplicates_merged", "num_dropped_lines",
                "skill_source"):
        assert key in results
    assert results["skill_source"] == "import" and results["num_query_types"] == 2
    skills = [json.loads(line) for line in paths["skills.jsonl"].read_text().splitlines()]
    assert {"skill", "topic", "source", "merged_count"} <= set(skills[0])
    assert skills[0] == {"skill": "budget_forecasting", "topic": None, "source": "import", "merged_count": 2}
    assert (run.path / "skills.txt").read_text().splitlines()[0] == "budget_forecasting"
    assert (run.path / "queries.txt").read_text().startswith("### 1. **Fact-Finding**")
    assert (run.path / "extract_skills" / "transcripts.jsonl").exists()


def test_import_of_skills_only_uses_shipped_query_types():
    cfg = SkillExtractionConfig(skill_source="import", skills_path=str(FIXTURES / "skills_plain.txt"),
                                topic_headers="none", dedup_method="exact")
    result = extract_skills(cfg)
    assert len(result.query_types) == 16 and {q["source"] for q in result.query_types} == {"shipped"}
    assert any("QUERY_TYPES_PATH is empty" in n for n in result.notes)


def test_direct_route_can_replace_only_the_query_types(tmp_path):
    cfg = SkillExtractionConfig(num_topics=3, query_types_path=str(FIXTURES / "queries_prose_style.txt"),
                                dedup_method="exact")
    result = extract_skills(cfg, client_for(direct_teacher, tmp_path))
    assert len(result.query_types) == 3 and result.summary()["num_teacher_calls"] == 4


@pytest.mark.parametrize("change, name", [
    ({"skill_source": "web"}, "SKILL_SOURCE"),
    ({"num_topics": 0}, "NUM_TOPICS"),
    ({"temperature": 3.0}, "TEMPERATURE"),
    ({"dedup_method": "cosine"}, "DEDUP_METHOD"),
    ({"skill_dedup_threshold": 1.5}, "SKILL_DEDUP_THRESHOLD"),
    ({"skill_source": "import"}, "SKILLS_PATH"),
    ({"skills_path": "no/such/skills.txt"}, "SKILLS_PATH"),
    ({"query_types_path": "no/such/queries.txt"}, "QUERY_TYPES_PATH"),
    ({"skill_source": "dataset", "seed_dataset": "missing.jsonl"}, "SEED_DATASET"),
    ({"cluster_batch_size": 1}, "CLUSTER_BATCH_SIZE"),
    ({"topic_headers": "first_line"}, "TOPIC_HEADERS"),
    ({"fallback": "silent"}, "FALLBACK"),
])
def test_bad_parameters_fail_before_any_call(change, name, tmp_path):
    calls = []
    client = client_for(lambda m, s: calls.append(m) or "", tmp_path)
    with pytest.raises(ParameterError) as error:
        extract_skills(SkillExtractionConfig(**change), client)
    assert error.value.name == name and not calls


def test_match_cluster():
    clusters = ["creative_writing", "data_analysis"]
    assert match_cluster("data_analysis", clusters) == "data_analysis"
    assert match_cluster("Creative Writing.", clusters) == "creative_writing"
    assert match_cluster("I think it is data_analysis because...", clusters) == "data_analysis"
    assert match_cluster("data analysys", clusters) == "data_analysis"
    assert match_cluster("gardening", clusters) is None and match_cluster("", clusters) is None


def test_config_help_covers_every_field():
    helps = SkillExtractionConfig.help()
    assert set(helps) == set(SkillExtractionConfig().as_params()) and all(helps.values())


def test_dataset_inputs_are_checked_before_the_teacher(tmp_path):
    from helpers.skills.extract import load_seed_for

    assert load_seed_for(SkillExtractionConfig()) is None
    items = load_seed_for(SkillExtractionConfig(skill_source="dataset", seed_dataset_limit=5))
    assert len(items) == 5
    bad = tmp_path / "seed.jsonl"
    bad.write_text('{"question": "What is 2+2?"}\n')
    with pytest.raises(ParameterError) as error:
        load_seed_for(SkillExtractionConfig(skill_source="dataset", seed_dataset=str(bad), seed_dataset_field="prompt"))
    assert error.value.name == "SEED_DATASET_FIELD"
