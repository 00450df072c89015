"""Every file name the kit agrees on, in one place: the run folder's layout and the data the kit ships.

A stage writes its artifacts where the next stage (and `helpers.sweep`, and a reader of the run folder) looks for
them, so these names are a contract between modules. Run-folder paths are relative POSIX strings: join them to a
run folder (`Path(run_dir) / TRAIN_JSONL`) or pass them to `Run.artifact(...)`, which creates the parent folder.

Shipped data (`data/`, `configs/`, `notebooks/`) lives beside the package in the repository: the kit is used from
a clone, not from an installed wheel.
"""
from __future__ import annotations

from pathlib import Path

# ---------------------------------------------------------------- the repository and what it ships
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
CONFIGS_DIR = PROJECT_ROOT / "configs"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"

SHIPPED_QUERY_TYPES = DATA_DIR / "query_types.jsonl"  # stage 1's fallback query types
SHIPPED_SEED_INSTRUCTIONS = DATA_DIR / "seed_instructions.jsonl"  # stage 1's dataset route, SEED_DATASET='shipped'
BUNDLED_EVAL_SET = DATA_DIR / "eval_set.jsonl"  # stage 4, EVAL_SET='bundled'
BUNDLED_MT_BENCH = DATA_DIR / "mt_bench_mini.jsonl"  # stage 4, MT_BENCH_SOURCE='bundled'
BUNDLED_LEADERBOARD = DATA_DIR / "leaderboard_alpaca_eval2.csv"  # published AlpacaEval 2.0 rows

# ---------------------------------------------------------------- the run folder: shared files
MANIFEST_JSON = "manifest.json"  # parameters, versions, models, accounting per stage
RESULTS_JSON = "results.json"  # named results per stage (`Run.record`)
FIGURES = "figures"  # `<stage>_<name>.png`
RUN_NOTEBOOKS = "notebooks"  # executed copies of the notebooks

# ---------------------------------------------------------------- stage 1: skills and query types
SKILLS_JSONL = "skills.jsonl"
QUERY_TYPES_JSONL = "query_types.jsonl"
SKILLS_TXT = "skills.txt"  # the official exchange formats
QUERIES_TXT = "queries.txt"
STAGE1_LISTS = (SKILLS_JSONL, QUERY_TYPES_JSONL, SKILLS_TXT, QUERIES_TXT)  # what stage 2 may read
EXTRACT = "extract_skills"  # stage 1's own folder
EXTRACT_SKILLS_WITH_TOPICS = f"{EXTRACT}/skills_with_topics.txt"
EXTRACT_QUERIES_DEFINITION_STYLE = f"{EXTRACT}/queries_definition_style.txt"
EXTRACT_TRANSCRIPTS = f"{EXTRACT}/transcripts.jsonl"
EXTRACT_RAW_SKILLS = f"{EXTRACT}/raw_skills.jsonl"
EXTRACT_INSTRUCTION_LABELS = f"{EXTRACT}/instruction_labels.jsonl"
EXTRACT_REPORT = f"{EXTRACT}/report.json"

# ---------------------------------------------------------------- stage 2: generated data (names inside DATA)
DATA = "data"
TRAIN_FILE, HELDOUT_FILE = "train.jsonl", "heldout.jsonl"
TRAIN_OFFICIAL_FILE, HELDOUT_OFFICIAL_FILE = "train_official.json", "heldout_official.json"
TRAIN_HF_FOLDER, HELDOUT_HF_FOLDER = "train_hf", "heldout_hf"
FAILED_FILE, FILTERED_FILE = "failed.jsonl", "filtered.jsonl"
TRAIN_JSONL = f"{DATA}/{TRAIN_FILE}"
HELDOUT_JSONL = f"{DATA}/{HELDOUT_FILE}"


def progress_file(split: str) -> str:
    """Stage 2's append-only progress log of one split, inside DATA (what a resumed run skips)."""
    return f"progress_{split}.jsonl"


# ---------------------------------------------------------------- stage 3: fine-tuning
SFT = "sft"
SFT_CHECKPOINTS = f"{SFT}/checkpoints"
SELECTION_JSON = f"{SFT}/selection.json"  # the chosen checkpoint, read by stage 4
SFT_HELDOUT_ANSWERS = f"{SFT}/heldout_answers.jsonl"

# ---------------------------------------------------------------- stage 4: evaluation
EVAL = "eval"
EVAL_ANSWERS_REFERENCE = f"{EVAL}/answers_reference.jsonl"
EVAL_PAIRWISE_ITEMS = f"{EVAL}/pairwise_items.csv"
EVAL_PAIRWISE_SUMMARY = f"{EVAL}/pairwise_summary.csv"
EVAL_MT_BENCH_SCORES = f"{EVAL}/mt_bench_scores.csv"
EVAL_WILDBENCH_SCORES = f"{EVAL}/wildbench_scores.jsonl"
EVAL_SCORES_SUMMARY = f"{EVAL}/scores_summary.csv"
EVAL_SHIRKER_PROBE = f"{EVAL}/shirker_probe.csv"
EVAL_WB_REWARD = f"{EVAL}/wb_reward.jsonl"
BATCHES = "batches"  # Batch API journal (batch ids written before waiting, so a killed run resumes polling)


# The folder each stage owns outright (its own outputs only, no resume state): a re-run of the stage replaces it as
# a whole, so no file of an earlier run with other parameters (an MT-Bench table when RUN_MT_BENCH is now False)
# survives beside the new ones. Stage 2's data/ (progress logs) and stage 3's sft/ (checkpoints) hold resume state
# and are not listed; their files are rewritten by every run.
STAGE_FOLDERS = {EXTRACT: EXTRACT, "evaluate": EVAL}


def eval_answers_file(role: str) -> str:
    """Answers of one evaluated model (`student`, `base`, ...) to the eval set."""
    return f"{EVAL}/answers_{role}.jsonl"


def figure_stem(stage: str, name: str) -> str:
    """A figure's path without its suffix: `Run.save_figure` writes it as .png and .svg."""
    return f"{FIGURES}/{stage}_{name}"


def eval_annotations_file(model: str) -> str:
    """alpaca_eval-style annotations of one model (re-scorable with `python -m helpers score-alpaca-eval`)."""
    return f"{EVAL}/annotations_{model}.json"
