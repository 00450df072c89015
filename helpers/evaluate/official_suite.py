"""Stage 4 with the judges' owners' protocols next to the kit's own: one call per benchmark that runs whichever judge
the parameter names (`alpaca_eval:...`, `fastchat:...`, `wildbench:...` or a kit judge folder) and labels every
number with its judge, prompt source, GLM and, when it rests on few items, a small-number flag.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from ..judge.alpaca_eval_glm import GlmData, resolve_glm_data
from ..judge.metrics import mt_bench_summary, wb_score
from ..judge.named import load_named_judge, owner_of
from ..judge.official_fastchat import (ANSWER_MAX_TOKENS, QUESTIONS, FastChatJudgeSet, answer_temperature,
                                       grading_values, parse_rating)
from ..judge.official_wildbench import (PAPER_REFERENCE_MODEL, WildBenchJudge, candidate_reward, candidate_shown_as_a,
                                        not_judged, pairwise_messages, parse_choice, parse_score, score_messages,
                                        wb_reward)
from ..judge.small_numbers import small_number_flag
from ..official import resolve
from ..params import ParameterError
from .answers import DecodingConfig, generate_two_turn_answers
from .sets import _load_records, load_mt_bench
from .suite import mt_bench_scores, wildbench_scores

MT_BENCH_SAMPLINGS = ("fastchat", "fastchat_temperatures", "answer")
MT_BENCH_WEIGHTED = ("mt_bench_weighted_avg", "mt_bench_weighted_turn1", "mt_bench_weighted_turn2")
WILDBENCH_OUTPUTS_HUB = "allenai/WildBench-V2-Model-Outputs"


# ------------------------------------------------------------------------------------------------ set-up


def pairwise_glm_data(cfg: Any) -> GlmData | None:
    """AlpacaEval's GLM data for the leaderboard's LC, when an alpaca_eval judge runs and the data can be had."""
    if owner_of(cfg.pairwise_judge) != "alpaca_eval":
        return None
    return resolve_glm_data(cfg.ae_glm_data, use_hub=True)


def mt_bench_questions(source: str, limit: int | None, fastchat_repo: str = "") -> list[dict[str, Any]]:
    """MT-Bench questions; `fastchat` = FastChat's own question.jsonl through the resolver of official files."""
    if source == "fastchat":
        source = str(resolve("fastchat", QUESTIONS, fastchat_repo).local_path)
    return load_mt_bench(source, limit)


# ------------------------------------------------------------------------------------------------ MT-Bench


def mt_bench_decoding(category: str, base: DecodingConfig, sampling: str) -> DecodingConfig:
    """FastChat's answer sampling for a category (`fastchat`: its temperature and 1,024 tokens;
    `fastchat_temperatures`: its temperature within the run's token cap), or the run's own (`answer`)."""
    if sampling == "answer":
        return base
    max_tokens = ANSWER_MAX_TOKENS if sampling == "fastchat" else base.max_tokens
    return DecodingConfig(answer_temperature(category), 1.0, max_tokens, base.seed)


def mt_bench_answers(client: Any, questions: Sequence[dict[str, Any]], base: DecodingConfig, sampling: str,
                     desc: str = "MT-Bench") -> list[dict[str, Any]]:
    """Two-turn answers, one batch per distinct sampling setting, returned in question order."""
    groups = mt_bench_groups(questions, base, sampling)
    return mt_bench_in_order(len(questions), groups, [
        generate_two_turn_answers(client, [questions[i] for i in positions], decoding, desc=desc)
        for positions, decoding in groups])


def mt_bench_groups(questions: Sequence[dict[str, Any]], base: DecodingConfig,
                    sampling: str) -> list[tuple[list[int], DecodingConfig]]:
    """The questions (their positions) asked with each distinct decoding setting (`mt_bench_decoding`)."""
    groups: dict[tuple, list[int]] = {}
    decodings: dict[tuple, DecodingConfig] = {}
    for i, q in enumerate(questions):
        decoding = mt_bench_decoding(q.get("category", ""), base, sampling)
        key = tuple(sorted(decoding.sampling().items()))
        groups.setdefault(key, []).append(i)
        decodings[key] = decoding
    return [(positions, decodings[key]) for key, positions in groups.items()]


def mt_bench_in_order(n: int, groups: Sequence[tuple[list[int], DecodingConfig]],
                      answered: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each group's answers, with their decoding, put back in question order."""
    answers: list[dict[str, Any] | None] = [None] * n
    for (positions, decoding), batch in zip(groups, answered):
        for i, answer in zip(positions, batch):
            answers[i] = {**answer, "decoding": decoding.sampling()}
    return [a for a in answers if a is not None]


def _fastchat_rows(judge_client: Any, questions: Sequence[dict[str, Any]],
                   answers_by_model: Mapping[str, Sequence[dict[str, Any]]], judges: FastChatJudgeSet) -> pd.DataFrame:
    rows = []
    for model, answers in answers_by_model.items():
        jobs, requests = [], []
        for q, a in zip(questions, answers):
            texts = list(a["answers"]) + ["", ""]
            for turn in (1, 2)[: len(q["turns"])]:
                judge = judges.pick(q.get("category", ""), turn)
                jobs.append({"model": model, "question_id": q["id"], "category": q.get("category", ""),
                             "turn": turn, "judge": f"fastchat:{judge.name}"})
                requests.append(judge.messages(**grading_values(q, texts, turn, judges.references)))
        results = judge_client.chat_many(requests, desc=f"MT-Bench {model}", **judges.plain.sampling()) if requests else []
        for job, result in zip(jobs, results):
            rows.append({**job, "score": parse_rating(result.text) if result.ok else None})
    return pd.DataFrame(rows, columns=["model", "question_id", "category", "turn", "score", "judge"])


def mt_bench_rows(judge_client: Any, questions: Sequence[dict[str, Any]],
                  answers_by_model: Mapping[str, Sequence[dict[str, Any]]], judge_name: str, reference_judge_name: str,
                  rating_judge: Callable[[str], Any], fastchat_repo: str = "") -> pd.DataFrame:
    """MT-Bench grades with FastChat's judges (`fastchat:single-v1`) or the kit's pair of judges."""
    if owner_of(judge_name) == "fastchat":
        judges = load_named_judge(judge_name, "MT_BENCH_JUDGE", fastchat_repo=fastchat_repo)
        return _fastchat_rows(judge_client, questions, answers_by_model, judges)
    return mt_bench_scores(judge_client, questions, answers_by_model, rating_judge(judge_name),
                           rating_judge(reference_judge_name))


def mt_bench_table(mt_rows: pd.DataFrame) -> pd.DataFrame:
    """Per model: MT-Bench average, turns and counts, with the small-number flag; the per-category tables are in
    `.attrs["per_category"]` (model -> table). The one place MT-Bench grades are summarised."""
    out, per_category = [], {}
    for model, rows in mt_rows.groupby("model"):
        s = mt_bench_summary(rows)
        total = s["n_graded"] + s["n_unparsed"]
        per_category[model] = s["per_category"]
        out.append({"model": model, "mt_bench_avg": s["mt_bench_avg"], "mt_bench_turn1": s["mt_bench_turn1"],
                    "mt_bench_turn2": s["mt_bench_turn2"], "n_graded": s["n_graded"], "n_total": total,
                    "flag": small_number_flag(s["n_graded"], total)})
        if (weighted := weighted_rows(rows)) is not None:
            w = mt_bench_summary(weighted)
            out[-1].update({f"mt_bench_weighted_{key}": w[f"mt_bench_{key}"] for key in ("avg", "turn1", "turn2")})
            out[-1].update(n_weighted=w["n_graded"], weighted_flag=small_number_flag(w["n_graded"], total))
    columns = ["model", "mt_bench_avg", "mt_bench_turn1", "mt_bench_turn2", "n_graded", "n_total", "flag"]
    table = pd.DataFrame(out, columns=columns + _weighted_columns(out, list(MT_BENCH_WEIGHTED)))
    table.attrs["per_category"] = per_category
    return table


def weighted_rows(rows: pd.DataFrame) -> pd.DataFrame | None:
    """The rows with their probability-weighted grades as `score` (so the grades the judge wrote are left out, never
    averaged with them), or None when no row has one."""
    if "weighted_score" not in rows or not rows["weighted_score"].notna().any():
        return None
    return rows.assign(score=pd.to_numeric(rows["weighted_score"], errors="coerce"))


def _weighted_columns(out: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """The weighted-grade columns of a summary table, only when some model has weighted grades."""
    return keys + ["n_weighted", "weighted_flag"] if any("n_weighted" in row for row in out) else []


# ------------------------------------------------------------------------------------------------ WildBench


def wildbench_items(items: Sequence[dict[str, Any]]) -> list[int]:
    """Positions of the WildBench tasks among the items (those loaded from WildBench carry their conversation)."""
    return [i for i, it in enumerate(items) if it.get("messages")]


def wildbench_rows(judge_client: Any, items: Sequence[dict[str, Any]], outputs_by_model: Mapping[str, Sequence[str]],
                   judge_name: str, rating_judge: Callable[[str], Any], wildbench_repo: str = "") -> pd.DataFrame:
    """Checklist scores on the WildBench tasks only (WB-Score means nothing on other items); with WildBench's own
    judge, empty or cut answers are left out as WildBench's tables leave them out."""
    keep = wildbench_items(items)
    tasks = [items[i] for i in keep]
    subset = {m: [list(o)[i] for i in keep] for m, o in outputs_by_model.items()}
    if not tasks:
        return pd.DataFrame(columns=["model", "id", "groups", "score"])
    if owner_of(judge_name) != "wildbench":
        return wildbench_scores(judge_client, tasks, subset, rating_judge(judge_name))
    judge: WildBenchJudge = load_named_judge(judge_name, "WILDBENCH_JUDGE", wildbench_repo=wildbench_repo)
    rows = []
    for model, outputs in subset.items():
        judged = [(it, out) for it, out in zip(tasks, outputs) if not_judged(out) is None]
        requests = [score_messages(judge, it, out) for it, out in judged]
        results = judge_client.chat_many(requests, desc=f"WildBench {model}", **judge.sampling()) if requests else []
        rows += [{"model": model, "id": it["id"], "groups": it.get("groups") or ["Creative Tasks"],
                  "score": parse_score(r.text) if r.ok else None} for (it, _), r in zip(judged, results)]
    return pd.DataFrame(rows, columns=["model", "id", "groups", "score"])


def wb_score_table(wb_rows: pd.DataFrame) -> pd.DataFrame:
    """Per model: WB-Score and counts, with the small-number flag. The one place checklist grades are summarised.
    Probability-weighted grades (an in-process judge's, where it wrote none) give their own `wb_score_weighted`."""
    out = []
    for model, rows in wb_rows.groupby("model"):
        s = wb_score(rows)
        total = s["n_graded"] + s["n_unparsed"]
        out.append({"model": model, "wb_score": s["wb_score"], "n_graded": s["n_graded"], "n_total": total,
                    "flag": small_number_flag(s["n_graded"], total)})
        if (weighted := weighted_rows(rows)) is not None:
            w = wb_score(weighted)
            out[-1].update(wb_score_weighted=w["wb_score"], n_weighted=w["n_graded"],
                           weighted_flag=small_number_flag(w["n_graded"], total))
    columns = ["model", "wb_score", "n_graded", "n_total", "flag"]
    return pd.DataFrame(out, columns=columns + _weighted_columns(out, ["wb_score_weighted"]))


def scores_summary(mt_table: pd.DataFrame, wb_table: pd.DataFrame) -> pd.DataFrame:
    """One row per model with the MT-Bench and WB-Score aggregates and their unreadable grades (from the two
    tables above, so nothing is summarised twice)."""
    mt = mt_table.assign(mt_bench_unparsed=mt_table["n_total"] - mt_table["n_graded"])[
        ["model", "mt_bench_turn1", "mt_bench_turn2", "mt_bench_avg", "mt_bench_unparsed"]
        + [c for c in ("mt_bench_weighted_avg",) if c in mt_table]]
    wb = wb_table.assign(wb_unparsed=wb_table["n_total"] - wb_table["n_graded"])[
        ["model", "wb_score", "wb_unparsed"] + [c for c in ("wb_score_weighted",) if c in wb_table]]
    if mt.empty and wb.empty:
        return pd.DataFrame(columns=["model"])
    merged = mt.merge(wb, on="model", how="outer") if len(mt) and len(wb) else (mt if len(mt) else wb)
    return merged.sort_values("model", ignore_index=True)


def wildbench_reference_outputs(source: str, items: Sequence[dict[str, Any]],
                                parameter: str = "WB_REWARD_REFERENCE") -> list[str]:
    """The reference model's answers per task (matched by session_id): a local JSON/JSONL file, or the hub's
    WildBench model outputs for gpt-4-turbo-2024-04-09 (the paper's reference)."""
    try:
        rows = _load_records(source, WILDBENCH_OUTPUTS_HUB, PAPER_REFERENCE_MODEL, "train")
    except Exception as exc:  # offline or unknown hub id: say what to do instead
        raise ParameterError(parameter, f"cannot load the WB-Reward reference answers ({exc})",
                             "give a local JSON/JSONL file with session_id and output") from None
    by_id = {str(r.get("session_id")): r.get("output") for r in rows}
    missing = [it["id"] for it in items if str(it["id"]) not in by_id]
    if missing:
        raise ParameterError(parameter, f"{len(missing)} WildBench tasks have no reference answer (first {missing[0]})",
                             "use the reference model's outputs for the same WildBench version")
    out = []
    for it in items:
        value = by_id[str(it["id"])]
        out.append(str(value[0] if isinstance(value, list) else value or ""))
    return out


def wb_reward_rows(judge_client: Any, items: Sequence[dict[str, Any]], outputs_by_model: Mapping[str, Sequence[str]],
                   reference_outputs: Sequence[str], judge_name: str, seed: int, k: int = -1,
                   wildbench_repo: str = "") -> pd.DataFrame:
    """Per task and model: WildBench's pairwise verdict against the reference and the candidate's reward."""
    judge: WildBenchJudge = load_named_judge(judge_name, "WB_REWARD_JUDGE", wildbench_repo=wildbench_repo)
    rows = []
    for model, outputs in outputs_by_model.items():
        jobs, requests = [], []
        for it, out, ref in zip(items, outputs, reference_outputs):
            cand_a = candidate_shown_as_a(str(it["id"]), seed)
            skipped = not_judged(out, ref)
            jobs.append((it, out, ref, cand_a, skipped))
            if skipped is None:
                requests.append(pairwise_messages(judge, it, *((out, ref) if cand_a else (ref, out))))
        results = iter(judge_client.chat_many(requests, desc=f"WB-Reward {model}", **judge.sampling())
                       if requests else [])
        for it, out, ref, cand_a, skipped in jobs:
            choice = None
            if skipped is None:
                result = next(results)
                choice = parse_choice(result.text) if result.ok else None
            rows.append({"model": model, "id": it["id"], "groups": it.get("groups") or ["Creative Tasks"],
                         "choice": choice, "candidate_is_a": cand_a, "skipped": skipped,
                         "reward": candidate_reward(choice, cand_a, len(out), len(ref), k)})
    return pd.DataFrame(rows, columns=["model", "id", "groups", "choice", "candidate_is_a", "skipped", "reward"])


def wb_reward_table(reward_rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for model, rows in reward_rows.groupby("model"):
        rewards = [None if r is None or (isinstance(r, float) and math.isnan(r)) else float(r) for r in rows["reward"]]
        skipped = [x if isinstance(x, str) else None for x in rows.get("skipped", [None] * len(rows))]
        s = wb_reward(rewards, list(rows["groups"]), skipped)
        out.append({"model": model, "wb_reward": s["wb_reward"], "wb_reward_task_macro": s["wb_reward_task_macro"],
                    "n_judged": s["n_judged"], "n_skipped": s["n_skipped"], "n_total": len(rewards),
                    "flag": small_number_flag(s["n_judged"], len(rewards))})
    return pd.DataFrame(out, columns=["model", "wb_reward", "wb_reward_task_macro", "n_judged", "n_skipped", "n_total",
                                      "flag"])
