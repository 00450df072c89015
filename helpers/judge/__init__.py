"""LLM judges as data (`judge/configs/<name>/`), judging through the LLM layer, and the metrics the paper reports."""
from .judging import (Judge, PairwiseJudgment, Rating, available_judges, load_judge, pairwise_judgments,
                      rate_answers, summarise_pairwise)
from .metrics import (finite_or_none, length_controlled_win_rate, mt_bench_summary, wb_score, wildbench_groups,
                      win_rate_stats)
from .named import compare_pairwise, judge_pairwise, load_named_judge

__all__ = ["Judge", "PairwiseJudgment", "Rating", "available_judges", "compare_pairwise", "finite_or_none",
           "length_controlled_win_rate", "judge_pairwise", "load_judge", "load_named_judge", "mt_bench_summary", "pairwise_judgments", "rate_answers",
           "summarise_pairwise", "wb_score", "wildbench_groups", "win_rate_stats"]
