"""Stage 4's notebook parameters as one checked object, so a bad value fails before any model is loaded."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .answers import DecodingConfig, read_selection
from .sets import EVAL_SETS
from .suite import SHIRKER_KINDS
from ..judge.judging import Judge, load_judge
from ..runs import run_dir_parameter
from ..params import ParameterError, check_choice, check_env_var_name, check_float, check_int

REFERENCES = ("bundled", "teacher")


@dataclass
class EvalConfig:
    """Everything the evaluation stage needs to know (names match the notebook's parameters)."""

    RUN_DIR: str = field(default="runs/demo", metadata={"help": "Run folder; the student is read from sft/selection.json."})
    SEED: int = field(default=0, metadata={"help": "Seed for the pairwise presentation order and sampling."})
    STUDENT_MODEL: str = field(default="", metadata={"help": "Empty: stage 3's best checkpoint. Else a model folder or endpoint id."})
    STUDENT_BASE_URL: str = field(default="", metadata={"help": "OpenAI-compatible endpoint serving STUDENT_MODEL; empty = in-process."})
    STUDENT_API_KEY_ENV: str = field(default="", metadata={"help": "Name of the env var holding the student endpoint's key."})
    BASE_MODEL: str = field(default="gemma-3-270m", metadata={"help": "The untuned base model the student was trained from (the same parameter as in stage 3)."})
    COMPARE_BASE: bool = field(default=True, metadata={"help": "Also score BASE_MODEL, asked with the student's template, as a baseline."})
    JUDGE_MODEL: str = field(default="smollm2-135m-instruct", metadata={"help": "Judge model id (recorded with every number)."})
    JUDGE_BASE_URL: str = field(default="", metadata={"help": "Judge endpoint; empty = in-process."})
    JUDGE_API_KEY_ENV: str = field(default="", metadata={"help": "Name of the env var holding the judge endpoint's key."})
    MAX_CONCURRENCY: int = field(default=8, metadata={"help": "Requests in flight per model."})
    REFERENCE: str = field(default="bundled", metadata={"help": "bundled = the eval set's reference outputs; teacher = answers from TEACHER_*."})
    TEACHER_MODEL: str = field(default="smollm2-135m-instruct", metadata={"help": "Reference model when REFERENCE='teacher'."})
    TEACHER_BASE_URL: str = field(default="", metadata={"help": "Endpoint of the reference model."})
    TEACHER_API_KEY_ENV: str = field(default="", metadata={"help": "Name of the env var with its key."})
    EVAL_SET: str = field(default="bundled", metadata={"help": "bundled | alpaca_eval | wildbench (hub sets need network or a local file)."})
    EVAL_SOURCE: str = field(default="", metadata={"help": "Local file in the hub set's schema, or a hub id; empty = default."})
    N_EVAL: int = field(default=50, metadata={"help": "Instructions evaluated (0 = all)."})
    MT_BENCH_SOURCE: str = field(default="bundled", metadata={"help": "bundled (8 demo questions), a question.jsonl, or a hub id."})
    N_MT_BENCH: int = field(default=8, metadata={"help": "MT-Bench questions (0 = all; 0 questions skips MT-Bench with RUN_MT_BENCH)."})
    RUN_MT_BENCH: bool = field(default=True, metadata={"help": "Run the MT-Bench-style two-turn grading."})
    RUN_WILDBENCH: bool = field(default=True, metadata={"help": "Run the WildBench-style checklist grading."})
    ANSWER_TEMPERATURE: float = field(default=0.9, metadata={"help": "Answer sampling temperature (paper: 0.9)."})
    ANSWER_TOP_P: float = field(default=1.0, metadata={"help": "Answer nucleus mass (paper: 1.0)."})
    ANSWER_MAX_TOKENS: int = field(default=128, metadata={"help": "Answer length cap (paper: 2048; small for CPU)."})
    PAIRWISE_JUDGE: str = field(default="alpaca_eval_pairwise", metadata={"help": "Judge folder for pairwise comparisons."})
    MT_BENCH_JUDGE: str = field(default="mt_bench_single", metadata={"help": "Judge folder for MT-Bench grading."})
    MT_BENCH_REFERENCE_JUDGE: str = field(default="mt_bench_single_reference", metadata={"help": "Judge for math/reasoning/coding."})
    WILDBENCH_JUDGE: str = field(default="wildbench_checklist", metadata={"help": "Judge folder for checklist scoring."})
    JUDGE_MAX_TOKENS: int = field(default=64, metadata={"help": "Cap on rating judges' replies (0 = the judge's own setting)."})
    SHIRKER_PROBE_FRACTIONS: list = field(default_factory=lambda: [0.0, 0.5], metadata={"help": "Fractions for the shirker probe."})
    SHIRKER_PROBE_KINDS: list = field(default_factory=lambda: ["brevity", "junk"], metadata={"help": "Kinds for the shirker probe."})
    SWEEP_CSV: str = field(default="", metadata={"help": "A sweep.csv from helpers.sweep to plot (ablation curves); empty = none."})

    def __post_init__(self) -> None:
        self.RUN_DIR = run_dir_parameter(self.RUN_DIR)  # relative to the project root, whatever the working directory

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> EvalConfig:
        known = {k: v for k, v in params.items() if k in cls.__dataclass_fields__}
        return cls(**known).validate()

    def validate(self) -> EvalConfig:
        check_int("SEED", self.SEED)
        check_int("MAX_CONCURRENCY", self.MAX_CONCURRENCY, 1, 4096)
        for name in ("STUDENT_API_KEY_ENV", "JUDGE_API_KEY_ENV", "TEACHER_API_KEY_ENV"):
            check_env_var_name(name, getattr(self, name))
        check_choice("REFERENCE", self.REFERENCE, REFERENCES)
        check_choice("EVAL_SET", self.EVAL_SET, EVAL_SETS)
        check_int("N_EVAL", self.N_EVAL, 0)
        check_int("N_MT_BENCH", self.N_MT_BENCH, 0)
        check_int("JUDGE_MAX_TOKENS", self.JUDGE_MAX_TOKENS, 0, 32768)
        self.decoding().validate("ANSWER")
        for name in ("PAIRWISE_JUDGE", "MT_BENCH_JUDGE", "MT_BENCH_REFERENCE_JUDGE", "WILDBENCH_JUDGE"):
            load_judge(getattr(self, name), parameter=name)
        if load_judge(self.PAIRWISE_JUDGE).kind != "pairwise":
            raise ParameterError("PAIRWISE_JUDGE", f"{self.PAIRWISE_JUDGE!r} is not a pairwise judge", "use alpaca_eval_pairwise")
        for f in self.SHIRKER_PROBE_FRACTIONS:
            check_float("SHIRKER_PROBE_FRACTIONS", f, 0.0, 1.0)
        for k in self.SHIRKER_PROBE_KINDS:
            check_choice("SHIRKER_PROBE_KINDS", k, SHIRKER_KINDS)
        if self.EVAL_SET == "wildbench" and self.REFERENCE == "bundled":
            raise ParameterError("REFERENCE", "WildBench has no reference outputs", "set REFERENCE='teacher'")
        if self.SWEEP_CSV and not Path(self.SWEEP_CSV).exists():
            raise ParameterError("SWEEP_CSV", f"{self.SWEEP_CSV!r} does not exist",
                                 "run `python -m helpers.sweep --grid shirkers --out sweeps/shirkers` first, or leave it empty")
        if not self.STUDENT_MODEL:
            read_selection(self.RUN_DIR)
        return self

    def decoding(self) -> DecodingConfig:
        return DecodingConfig(self.ANSWER_TEMPERATURE, self.ANSWER_TOP_P, self.ANSWER_MAX_TOKENS, self.SEED)

    def rating_judge(self, name: str) -> Judge:
        """A rating judge with the demo's reply cap applied (recorded via Judge.describe)."""
        judge = load_judge(name)
        return replace(judge, max_tokens=self.JUDGE_MAX_TOKENS) if self.JUDGE_MAX_TOKENS else judge

    def student_model(self) -> str:
        return self.STUDENT_MODEL or str(read_selection(self.RUN_DIR)["best_checkpoint"])


def connect_answerers(cfg: EvalConfig) -> dict[str, Any]:
    """Clients for the models being evaluated: the student and, if set, the base model asked through the student's
    saved chat template (base checkpoints have none of their own)."""
    from .answers import saved_chat_template
    from ..llm.client import connect

    student_model = cfg.student_model()
    clients = {"student": connect(student_model, cfg.STUDENT_BASE_URL, cfg.STUDENT_API_KEY_ENV, cfg.MAX_CONCURRENCY,
                                  stage="evaluate", role="STUDENT")}
    if cfg.COMPARE_BASE and cfg.BASE_MODEL:
        template = saved_chat_template(student_model) if not cfg.STUDENT_BASE_URL else None
        clients["base"] = connect(cfg.BASE_MODEL, "", "", cfg.MAX_CONCURRENCY, stage="evaluate", role="BASE",
                                  chat_template=template)
    return clients
