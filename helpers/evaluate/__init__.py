"""Stage 4: evaluation with LLM judges and the ablations (notebooks/04_eval_ablations.ipynb)."""
from .ablations import ok_rows
from .answers import generate_two_turn_answers
from .calibration import CALIBRATION_MODEL, calibration_outputs, calibration_reading
from .config import EvalConfig, connect_answerers
from .leaderboard import PAPER_MODEL, published_leaderboard
from .official_suite import (mt_bench_answers, mt_bench_questions, mt_bench_rows, mt_bench_table,
                             pairwise_glm_data, wb_reward_rows, wb_reward_table, wb_score_table, wildbench_items,
                             wildbench_reference_outputs, wildbench_rows)
from .plots import plot_leaderboard, plot_metric_by, plot_mt_bench_categories, plot_win_rates
from .record import (answer_eval_set, leaderboard_rows, record_accounting, record_mt_bench,
                     record_pairwise, record_probe, record_setup, record_wb_reward, record_wildbench,
                     reference_outputs)
from .sets import load_eval_set, load_mt_bench
from .pairwise import pairwise_table
from .suite import mt_bench_scores, shirker_probe, wildbench_scores
from .together import answer_all

__all__ = ["CALIBRATION_MODEL", "EvalConfig", "PAPER_MODEL", "answer_all", "answer_eval_set", "calibration_outputs",
           "calibration_reading", "connect_answerers",
           "generate_two_turn_answers", "leaderboard_rows", "load_eval_set", "load_mt_bench", "mt_bench_answers",
           "mt_bench_questions", "mt_bench_rows", "mt_bench_scores", "mt_bench_table", "ok_rows",
           "pairwise_glm_data", "pairwise_table", "plot_leaderboard", "plot_metric_by",
           "plot_mt_bench_categories", "plot_win_rates", "published_leaderboard", "record_accounting",
           "record_mt_bench", "record_pairwise", "record_probe", "record_setup", "record_wb_reward",
           "record_wildbench", "reference_outputs", "shirker_probe", "wb_reward_rows", "wb_reward_table",
           "wb_score_table", "wildbench_items", "wildbench_reference_outputs", "wildbench_rows", "wildbench_scores"]
