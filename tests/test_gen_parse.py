"""Parsing the final instruction/response pair out of awkward teacher replies."""
from helpers.generate.parse import parse_final_pair, split_fields, strip_wrapping

PAIR = ["pair"]


def test_clean_pair_with_task_type_and_skills_headers():
    text = ("### Task Type: Planning\n### Skills: a, b\n### Instruction: Plan my week?\n"
            "### Response: Monday: rest.\n### Tuesday\nWork.")
    p = parse_final_pair([text], PAIR)
    assert p.ok and p.instruction == "Plan my week?"
    assert p.response == "Monday: rest.\n### Tuesday\nWork."  # markdown headers inside answers survive


def test_query_header_instead_of_instruction():
    p = parse_final_pair(["### Query: Why is the sky blue?\n### Response: Rayleigh scattering."], PAIR)
    assert (p.instruction, p.response) == ("Why is the sky blue?", "Rayleigh scattering.")


def test_headers_without_hashes_bold_and_refined_prefix():
    text = "**Refined Instruction:** How do I fix it?\n\n**Refined Response:**\nRestart it."
    p = parse_final_pair([text], PAIR)
    assert (p.instruction, p.response) == ("How do I fix it?", "Restart it.")


def test_header_on_its_own_line_and_lowercase():
    p = parse_final_pair(["instruction:\nName three rivers.\n\nresponse\nNile, Amazon, Danube."], PAIR)
    assert (p.instruction, p.response) == ("Name three rivers.", "Nile, Amazon, Danube.")


def test_quotes_around_instruction_are_removed_but_inner_quotes_kept():
    assert strip_wrapping('"Is this ok?"') == "Is this ok?"
    assert strip_wrapping("\u201cSmart quotes?\u201d") == "Smart quotes?"
    assert strip_wrapping('"a" and "b"') == '"a" and "b"'
    p = parse_final_pair(['### Instruction: "Explain X."\n### Response: X is Y.'], PAIR)
    assert p.instruction == "Explain X."


def test_pair_spread_over_last_two_turns_with_bare_rewrite():
    replies = ["### Instruction: First?\n### Response: draft", "critique text", "### Instruction: Better?\n### Response: cut o",
               "The complete rewritten answer."]
    p = parse_final_pair(replies, ["pair", "none", "pair", "rewrite"])
    assert (p.instruction, p.response) == ("Better?", "The complete rewritten answer.")
    assert (p.instruction_turn, p.response_turn) == (2, 3)


def test_refine_without_instruction_falls_back_to_earlier_instruction():
    replies = ["### Instruction: Draft question?\n### Response: draft", "weak", "### Response: improved answer"]
    p = parse_final_pair(replies, ["pair", "none", "pair"])
    assert (p.instruction, p.response) == ("Draft question?", "improved answer")
    assert (p.instruction_turn, p.response_turn) == (0, 2)


def test_critique_is_never_parsed():
    replies = ["no format at all", "### Instruction: critique says?\n### Response: critique", "still nothing"]
    p = parse_final_pair(replies, ["pair", "none", "pair"])
    assert not p.ok and p.reason == "no instruction and no response found"


def test_missing_response_and_missing_instruction_reasons():
    assert parse_final_pair(["### Instruction: only this"], PAIR).reason == "no response found"
    assert parse_final_pair(["### Response: only that"], PAIR).reason == "no instruction found"
    assert parse_final_pair([""], PAIR).reason == "no instruction and no response found"


def test_bare_text_counts_as_response_only_in_rewrite_turns():
    assert parse_final_pair(["just prose"], ["pair"]).response is None
    assert split_fields("just prose") == {}


def test_first_pair_wins_when_the_teacher_rambles_on():
    text = ("### Instruction: What are your strengths?\n### Response: Maps help.\n"
            "### Skills: x, y\n### Instruction: Another made-up one\n### Response: more")
    assert split_fields(text) == {"instruction": "What are your strengths?", "response": "Maps help."}
    bold_section = "### Instruction: Review my CV.\n### Response: Good.\n**Skills:** list Python first."
    assert split_fields(bold_section)["response"] == "Good.\n**Skills:** list Python first."


def test_echoed_format_placeholders_are_not_content():
    replies = ["### Instruction: Real question?\n### Response: Real answer.", "critique",
               "### Instruction: <the improved request>\n### Response: <the improved answer>"]
    p = parse_final_pair(replies, ["pair", "none", "pair"])
    assert (p.instruction, p.response, p.response_turn) == ("Real question?", "Real answer.", 0)
    echoed = "### Instruction: <the improved request>\n### Successfully edited the request:\n### Response: Better."
    p = parse_final_pair(["### Instruction: Real question?\n### Response: draft", "critique", echoed],
                         ["pair", "none", "pair"])
    assert (p.instruction, p.instruction_turn, p.response) == ("Real question?", 0, "Better.")


LOOSE = ["loose_pair"]


def test_loose_pair_reads_what_a_small_teacher_writes():
    # "Answer:" for "Response:", and the request as plain text before it
    p = parse_final_pair(["How can I make my flyer convincing?\n\n### Answer: \nLead with the children."], LOOSE)
    assert (p.instruction, p.response) == ("How can I make my flyer convincing?", "Lead with the children.")
    # the answer after the instruction's first paragraph, with no response header
    text = "### Task Type: Humor\n### Instruction: Write a poem that makes me laugh.\n\nA dragon tried to fly but sat on a cat."
    p = parse_final_pair([text], LOOSE)
    assert (p.instruction, p.response) == ("Write a poem that makes me laugh.", "A dragon tried to fly but sat on a cat.")
    # a reply without any header is the refined response; the instruction comes from the first draft
    replies = ["### Instruction: Plan my week?\n### Response: Rest.", "critique", "Monday: rest. Tuesday: work out."]
    p = parse_final_pair(replies, ["loose_pair", "none", "loose_pair"])
    assert (p.instruction, p.response, p.instruction_turn, p.response_turn) == (
        "Plan my week?", "Monday: rest. Tuesday: work out.", 0, 2)


def test_loose_pair_still_refuses_what_is_not_a_pair():
    assert parse_final_pair(["### Instruction: only this"], LOOSE).reason == "no response found"
    short = parse_final_pair(["### Instruction: Name three rivers.\n\nYour answer is:"], LOOSE)
    assert short.reason == "no response found"  # a few untitled words are not an answer
    echo = parse_final_pair(["### Instruction: <the request>\n### Response: <your answer>"], LOOSE)
    assert echo.reason == "no instruction and no response found"
    assert parse_final_pair([""], LOOSE).reason == "no instruction and no response found"


def test_strict_pair_is_unchanged_by_the_loose_readings():
    assert parse_final_pair(["How can I?\n\n### Answer: Like this."], PAIR).reason == "no instruction and no response found"
    assert parse_final_pair(["### Instruction: Write a poem.\n\nA dragon tried to fly but sat on a cat."],
                            PAIR).reason == "no response found"
    assert split_fields("Solve 2+2.\nAnswer: four") == {}
