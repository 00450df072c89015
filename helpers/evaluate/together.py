"""Stage 4's answers in as few rounds of decoding as the models allow: the eval set and MT-Bench asked together.

An in-process model decodes every waiting request in one batch, and on a CPU a step of 16 rows takes about as long
as a step of 4 (`helpers.llm.device`); its backend also lets requests of different temperatures share a batch.
Asked one after the other, a model's eval-set answers (12 items: a batch of 8, then one of 4) and its MT-Bench
answers (one pair of turns per temperature group, group after group) took six rounds of decoding in the demo;
asked at once they take two: the eval set with every first turn, then the second turns. The replies are the
same either way: each one is seeded by its own request (`helpers.llm.generation`). An endpoint simply sees the
requests of both at once, within MAX_CONCURRENCY.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..llm.client import ChatClient
from ..runs import Run
from .answers import (DecodingConfig, answer_requests, answers_from_results, save_answers,
                      two_turn_from_conversations)
from .candidates import candidate_outputs
from ..layout import eval_answers_file
from .official_suite import mt_bench_groups, mt_bench_in_order

STUDENT = "student"


def answer_all(run: Run, answerers: Mapping[str, ChatClient], items: list[dict[str, Any]], decoding: DecodingConfig,
               candidate_file: str = "", questions: Sequence[dict[str, Any]] = (),
               mt_sampling: str = "answer") -> tuple[dict[str, list[str]], dict[str, list[dict[str, Any]]]]:
    """Every evaluated model answers every eval instruction (saved as `eval/answers_<role>.jsonl`, as
    `record.answer_eval_set` does) and, in the same rounds, every MT-Bench question's two turns
    (`official_suite.mt_bench_answers`' records). Returns (eval outputs by role, MT-Bench answers by role).
    With `candidate_file` (CANDIDATE_OUTPUTS) the student's eval answers are that file's, matched by instruction."""
    outputs: dict[str, list[str]] = {}
    two_turn: dict[str, list[dict[str, Any]]] = {}
    if candidate_file:
        outputs[STUDENT], generator = candidate_outputs(candidate_file, items)
        run.add_model("STUDENT", {"model": generator, "outputs_file": candidate_file})
    groups = mt_bench_groups(questions, decoding, mt_sampling) if questions else []
    for role, client in answerers.items():
        # one gather: a client frees its per-loop resources when a gather ends, which others in flight still use
        asks = [client.achat(messages, **decoding.sampling()) for messages in answer_requests(items)]
        asks += [client.aconverse(questions[i]["turns"][:2], **group_decoding.sampling())
                 for positions, group_decoding in groups for i in positions]
        done = client.gather(asks, desc=f"{role} answers" + (" and MT-Bench" if questions else ""))
        answers = answers_from_results(items, done[:len(items)])
        save_answers(run.artifact(eval_answers_file(role)), answers, client.model, decoding)
        outputs[role] = [a["output"] for a in answers]
        if questions:
            conversations, answered = iter(done[len(items):]), []
            for positions, _ in groups:
                answered.append(two_turn_from_conversations([questions[i] for i in positions],
                                                            [next(conversations) for _ in positions]))
            two_turn[role] = mt_bench_in_order(len(questions), groups, answered)
    return outputs, two_turn
