"""Stage 4: evaluation with LLM judges and the ablations (notebooks/04_eval_ablations.ipynb)."""
from .answers import generate_two_turn_answers
from .config import EvalConfig, connect_answerers
from .leaderboard import PAPER_MODEL, published_leaderboard
from .plots import plot_leaderboard, plot_metric_by, plot_mt_bench_categories, plot_win_rates
from .record import (answer_eval_set, leaderboard_rows, ok_sweep_rows, record_accounting, record_mt_bench,
                     record_pairwise, record_probe, record_setup, record_wildbench, reference_outputs)
from .sets import load_eval_set, load_mt_bench
from .suite import mt_bench_scores, pairwise_comparison, shirker_probe, wildbench_scores

__all__ = ["EvalConfig", "PAPER_MODEL", "answer_eval_set", "connect_answerers", "generate_two_turn_answers",
           "leaderboard_rows", "load_eval_set", "load_mt_bench", "mt_bench_scores", "ok_sweep_rows",
           "pairwise_comparison", "plot_leaderboard", "plot_metric_by", "plot_mt_bench_categories", "plot_win_rates",
           "published_leaderboard", "record_accounting", "record_mt_bench", "record_pairwise", "record_probe",
           "record_setup", "record_wildbench", "reference_outputs", "shirker_probe", "wildbench_scores"]
