"""Tolerant parsing: malformed teacher replies keep what is usable and count every dropped line."""
from helpers.skills.parse import (parse_clusters, parse_item_list, parse_label, parse_query_types, to_snake_case)


def test_snake_case_normalises_names():
    assert to_snake_case("Public Speaking & Rhetoric") == "public_speaking_and_rhetoric"
    assert to_snake_case("  **Data-Visualization** ") == "data_visualization"


def test_numbered_list_with_prose_around_it():
    reply = "Sure! Here are the skills you asked for:\n1. Knife skills\n2) **Recipe Scaling**\n3. Sauce making\nHope this helps!"
    items, report = parse_item_list(reply)
    assert items == ["knife_skills", "recipe_scaling", "sauce_making"]
    assert report.kept == 3
    assert report.dropped == {"prose around the list": 2}


def test_bullets_descriptions_and_duplicates():
    reply = "- debugging: finding faults\n* Code review - reading others' code\n• debugging\n+ unit_testing (writing tests)"
    items, report = parse_item_list(reply)
    assert items == ["debugging", "code_review", "unit_testing"]
    assert report.dropped == {"duplicate within the reply": 1}


def test_stacked_markers_and_trailing_commas():
    reply = "1. List one specific skill: \n### 1. Budget_forecasting\n### 2. Persuasive_writing\n- 3) home cooking,"
    items, report = parse_item_list(reply)
    assert items == ["budget_forecasting", "persuasive_writing", "home_cooking"]
    assert report.dropped == {"heading of a list, not an item": 1}
    items, _ = parse_item_list("1. **Budget forecasting**:\n   predicting spending\n2. **Tax filing**:")
    assert items == ["budget_forecasting", "tax_filing"]


def test_bare_snake_case_lines_and_comma_lists():
    assert parse_item_list("budget_forecasting\npersuasive_writing\n")[0] == ["budget_forecasting", "persuasive_writing"]
    assert parse_item_list("cooking, travel, tax returns")[0] == ["cooking", "travel", "tax_returns"]


def test_empty_and_prose_only_replies_are_counted():
    items, report = parse_item_list("")
    assert items == [] and report.empty_replies == 1
    items, report = parse_item_list("The need for information in daily life is a particular example of a relatable need.")
    assert items == [] and report.num_dropped == 1
    assert report.examples[0][0] == "too long to be a name (prose)"


def test_overlong_list_items_are_dropped_with_reason():
    items, report = parse_item_list("1. a very long item that keeps going and going and going on\n2. short one", max_words=6)
    assert items == ["short_one"]
    assert report.dropped == {"too long to be a name (prose)": 1}


def test_label_parsing():
    assert parse_label("Skill: summarising_legal_text")[0] == "summarising_legal_text"
    assert parse_label("The skill is **Persuasive Writing**.")[0] == "persuasive_writing"
    assert parse_label("The best answer is:\n\nit needs **Summarising Legal Text**.")[0] == "summarising_legal_text"
    assert parse_label('It is called "Vegetarian Cooking" - a recipe skill')[0] == "vegetarian_cooking"
    label, report = parse_label("The response is:\nThe single most important skill depends on the scale of the task.")
    assert label is None and report.dropped == {"lead-in line, not a label": 1,
                                                "label line unusable (prose or too long)": 1}
    label, report = parse_label("   ")
    assert label is None and report.empty_replies == 1


def test_cluster_parsing_counts_unknown_and_repeated_members():
    known = ["bread_baking", "cake_decorating", "debugging", "unit_testing"]
    reply = ("Here are the clusters:\n- **baking**: bread_baking, cake_decorating\n"
             "software_quality: debugging, unit_testing, flying\nextra: debugging\n")
    clusters, report = parse_clusters(reply, known)
    assert clusters == {"baking": ["bread_baking", "cake_decorating"], "software_quality": ["debugging", "unit_testing"]}
    assert report.dropped["cluster member is not a known label"] == 1
    assert report.dropped["label already in another cluster"] == 1
    assert report.dropped["cluster with no known members"] == 2  # the lead-in line and the emptied "extra"
    _, report = parse_clusters("I grouped them by theme.", known)
    assert report.dropped == {"no 'cluster: members' shape": 1}


def test_query_types_in_chat_shape():
    reply = ('Here you go.\n1. **Information-Seeking**: the user wants facts.\n- "What is X?"\n- "Why Y?"\n'
             '2. Planning - the user wants a plan.\n  "Plan a trip to Rome."\n3. **Empty**\n')
    types, report = parse_query_types(reply)
    assert [t["name"] for t in types] == ["Information-Seeking", "Planning"]
    assert types[0] == {"name": "Information-Seeking", "definition": "the user wants facts.",
                        "examples": ["What is X?", "Why Y?"]}
    assert types[1]["examples"] == ["Plan a trip to Rome."]
    assert report.dropped == {"prose outside any query type": 1, "query type with neither definition nor examples": 1}
