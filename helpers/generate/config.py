"""Stage 2's parameters as one dataclass, so the notebook, a script, the driver and a sweep check them the same way.

Defaults are the notebook's offline demo (a 135M teacher on a CPU); the paper's values are in `configs/paper.yaml`
and in the help strings. Every check runs before any model is loaded or called.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import StageConfig, param, shared
from ..layout import QUERY_TYPES_JSONL, SKILLS_JSONL
from ..llm.endpoint import Endpoint
from ..params import ParameterError, check_choice, check_existing_path, check_float, check_int
from .prompt_versions import get_version, shirker_kinds


@dataclass
class GenerateConfig(StageConfig):
    """Stage 2: how many examples, how the teacher is asked, what the filters drop, how many shirkers."""

    run_dir: str = shared("run_dir")
    seed: int = shared("seed")
    teacher_model: str = shared("teacher_model")
    teacher_base_url: str = shared("teacher_base_url")
    teacher_api_key_env: str = shared("teacher_api_key_env")
    max_concurrency: int = shared("max_concurrency")
    skills_path: str = shared("skills_path")
    query_types_path: str = shared("query_types_path")
    num_examples: int = param(6, "Training examples to plan (the paper: 1K-4K). Failed or filtered ones are not "
                                 "replaced.")
    num_heldout: int = param(2, "Held-out examples (drawn with a seed derived from SEED) used to pick the best SFT "
                                "checkpoint (the paper: 100).")
    k_skills: int = param(2, "Skills combined in each example (the paper's k = 2).")
    prompt_version: str = param("paper_compact", "Turn sequence from generate/prompts/versions.yaml: 'paper' = "
                                                 "generate, critique, refine; 'paper_compact' the same turns with a "
                                                 "shorter first prompt (the CPU demo).")
    temperature: float = shared("temperature")
    generate_max_tokens: int = param(160, "Longest teacher reply per generation turn, in tokens; replies cut here "
                                          "count as truncated (a real teacher: 2048).")
    max_attempts: int = param(2, "Conversations tried per example before it is recorded as failed (each retry is a "
                                 "fresh sample; the paper's setting here: 3).")
    min_instruction_words: int = param(3, "Drop examples whose instruction has fewer words (with a real teacher: 5).")
    max_instruction_words: int = param(600, "Drop examples whose instruction has more words.")
    instruction_dedup_threshold: float = param(0.7, "Drop an instruction whose word ROUGE-L F1 with an earlier one "
                                                    "reaches this; 1.0 = exact duplicates only.")
    drop_truncated: bool = param(False, "Drop examples whose final response stopped at GENERATE_MAX_TOKENS (the "
                                        "paper's data has no cut-off answers; the tiny demo keeps them to have data "
                                        "at all).")
    shirker_fraction: float = param(0.0, "Fraction of training examples whose response is replaced by a low-quality "
                                         "one (the paper's ablation: 0.2).")
    shirker_kind: str = param("junk", "'brevity' (one paragraph) or 'junk' (unhelpful, vague, long, filler-laden).")
    dry_run: bool = param(False, "Only plan and estimate calls, tokens and cost; call no model.")

    @property
    def skills_file(self) -> Path:
        return Path(self.skills_path) if self.skills_path else Path(self.run_dir) / SKILLS_JSONL

    @property
    def query_types_file(self) -> Path:
        return Path(self.query_types_path) if self.query_types_path else Path(self.run_dir) / QUERY_TYPES_JSONL

    def teacher(self) -> Endpoint:
        return Endpoint.from_params(self, "TEACHER")

    def check_values(self) -> None:
        if not str(self.run_dir).strip():
            raise ParameterError("RUN_DIR", "is empty", "use a folder such as 'runs/demo'")
        self.seed = check_int("SEED", self.seed, 0)
        self.max_concurrency = check_int("MAX_CONCURRENCY", self.max_concurrency, 1, 4096)
        self.teacher().validate()
        if not self.teacher_model and not self.teacher_base_url:
            raise ParameterError("TEACHER_MODEL", "is empty", "use 'smollm2-135m-instruct' or the endpoint's model id")
        self.num_examples = check_int("NUM_EXAMPLES", self.num_examples, 1)
        self.num_heldout = check_int("NUM_HELDOUT", self.num_heldout, 0)
        self.k_skills = check_int("K_SKILLS", self.k_skills, 1, 10)
        get_version(self.prompt_version)
        self.temperature = check_float("TEMPERATURE", self.temperature, 0.0, 2.0)
        self.generate_max_tokens = check_int("GENERATE_MAX_TOKENS", self.generate_max_tokens, 16, 128_000)
        self.max_attempts = check_int("MAX_ATTEMPTS", self.max_attempts, 1, 20)
        self.min_instruction_words = check_int("MIN_INSTRUCTION_WORDS", self.min_instruction_words, 0)
        self.max_instruction_words = check_int("MAX_INSTRUCTION_WORDS", self.max_instruction_words, 1)
        if self.min_instruction_words > self.max_instruction_words:
            raise ParameterError("MIN_INSTRUCTION_WORDS", f"{self.min_instruction_words} is above MAX_INSTRUCTION_WORDS "
                                 f"({self.max_instruction_words})", "make the minimum at most the maximum")
        self.instruction_dedup_threshold = check_float("INSTRUCTION_DEDUP_THRESHOLD", self.instruction_dedup_threshold,
                                                       0.05, 1.0)
        for name in ("drop_truncated", "dry_run"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(name.upper(), f"expected True or False, got {getattr(self, name)!r}", "use True or False")
        self.shirker_fraction = check_float("SHIRKER_FRACTION", self.shirker_fraction, 0.0, 1.0)
        check_choice("SHIRKER_KIND", self.shirker_kind, shirker_kinds())

    def check_inputs(self) -> None:
        """Stage 1's lists (or the files SKILLS_PATH / QUERY_TYPES_PATH name) must exist."""
        for name, path in (("SKILLS_PATH", self.skills_file), ("QUERY_TYPES_PATH", self.query_types_file)):
            if not path.exists():
                where = f"{name}={str(path)!r}" if getattr(self, name.lower()) else f"{path} (from RUN_DIR)"
                raise ParameterError(name, f"{where} does not exist",
                                     "run notebooks/01_extract_skills.ipynb with the same RUN_DIR first, or point "
                                     f"{name} at a skills/queries file (JSONL or the official .txt)")
            check_existing_path(name, path)
