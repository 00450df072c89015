"""Stage 2's parameters as one dataclass, so the notebook, a script and a sweep validate them the same way.

Defaults are the paper's procedure; the notebook's `parameters` cell overrides them with a tiny offline demo.
Every check runs before any model is loaded or called.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..llm.models import EMBEDDED_TEACHER
from ..runs import run_dir_parameter
from ..params import ParameterError, check_choice, check_env_var_name, check_existing_path, check_float, check_int


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class GenerateConfig:
    run_dir: str = _f("runs/demo", "Run folder: stage 1's skills.jsonl / query_types.jsonl are read from here; data/ is written here.")
    seed: int = _f(0, "Seed of the training plan (skills, query types) and of the shirker choice; the held-out seed is derived from it.")
    teacher_model: str = _f(EMBEDDED_TEACHER, "Teacher model id (endpoint model id, embedded name, or local checkpoint folder).")
    teacher_base_url: str = _f("", "OpenAI-compatible base URL of the teacher; empty runs the model in-process.")
    teacher_api_key_env: str = _f("", "NAME of the environment variable holding the teacher's API key (never the key).")
    max_concurrency: int = _f(8, "Conversations in flight at once (requests to the endpoint, or the local batch size).")
    skills_path: str = _f("", "Skills file (skills.jsonl or official skills.txt); empty = RUN_DIR/skills.jsonl.")
    query_types_path: str = _f("", "Query types file (query_types.jsonl or official queries.txt); empty = RUN_DIR/query_types.jsonl.")
    num_examples: int = _f(1000, "Training examples to plan (the paper: 1K-4K). Failed or filtered ones are not replaced.")
    num_heldout: int = _f(100, "Held-out examples (drawn with a different seed) used to pick the best SFT checkpoint.")
    k_skills: int = _f(2, "Skills combined in each example (the paper's k = 2).")
    prompt_version: str = _f("paper", "Turn sequence from generate/prompts/versions.yaml: 'paper' = generate, critique, refine.")
    temperature: float = _f(0.7, "Teacher sampling temperature.")
    max_tokens: int = _f(2048, "Longest teacher reply per turn, in tokens; replies cut here count as truncated.")
    max_attempts: int = _f(3, "Conversations tried per example before it is recorded as failed (each retry is a fresh sample).")
    min_instruction_words: int = _f(5, "Drop examples whose instruction has fewer words.")
    max_instruction_words: int = _f(600, "Drop examples whose instruction has more words.")
    dedup_threshold: float = _f(0.7, "Drop an instruction whose word ROUGE-L F1 with an earlier one reaches this; 1.0 = exact duplicates only.")
    drop_truncated: bool = _f(True, "Drop examples whose final response stopped at MAX_TOKENS.")
    shirker_fraction: float = _f(0.0, "Fraction of training examples whose response is replaced by a low-quality one (the paper's ablation: 0.2).")
    shirker_kind: str = _f("junk", "'brevity' (one paragraph) or 'junk' (unhelpful, vague, long, filler-laden).")
    dry_run: bool = _f(False, "Only plan and estimate calls, tokens and cost; call no model.")

    def __post_init__(self) -> None:
        self.run_dir = run_dir_parameter(self.run_dir)  # relative to the project root, whatever the working directory

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "GenerateConfig":
        """Build from notebook-style UPPER_CASE names; unknown names are ignored (other stages' parameters)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k.lower(): v for k, v in params.items() if k.lower() in names})

    def to_params(self) -> dict[str, Any]:
        return {f.name.upper(): getattr(self, f.name) for f in fields(self)}

    @property
    def skills_file(self) -> Path:
        return Path(self.skills_path) if self.skills_path else Path(self.run_dir) / "skills.jsonl"

    @property
    def query_types_file(self) -> Path:
        return Path(self.query_types_path) if self.query_types_path else Path(self.run_dir) / "query_types.jsonl"

    def validate(self) -> "GenerateConfig":
        """Raise ParameterError naming the first wrong parameter; returns self for chaining."""
        from .prompt_versions import get_version, shirker_kinds

        if not str(self.run_dir).strip():
            raise ParameterError("RUN_DIR", "is empty", "use a folder such as 'runs/demo'")
        self.seed = check_int("SEED", self.seed, 0)
        self.max_concurrency = check_int("MAX_CONCURRENCY", self.max_concurrency, 1, 4096)
        check_env_var_name("TEACHER_API_KEY_ENV", self.teacher_api_key_env)
        if not self.teacher_model and not self.teacher_base_url:
            raise ParameterError("TEACHER_MODEL", "is empty", f"use {EMBEDDED_TEACHER!r} or the endpoint's model id")
        self.num_examples = check_int("NUM_EXAMPLES", self.num_examples, 1)
        self.num_heldout = check_int("NUM_HELDOUT", self.num_heldout, 0)
        self.k_skills = check_int("K_SKILLS", self.k_skills, 1, 10)
        get_version(self.prompt_version)
        self.temperature = check_float("TEMPERATURE", self.temperature, 0.0, 2.0)
        self.max_tokens = check_int("MAX_TOKENS", self.max_tokens, 16, 128_000)
        self.max_attempts = check_int("MAX_ATTEMPTS", self.max_attempts, 1, 20)
        self.min_instruction_words = check_int("MIN_INSTRUCTION_WORDS", self.min_instruction_words, 0)
        self.max_instruction_words = check_int("MAX_INSTRUCTION_WORDS", self.max_instruction_words, 1)
        if self.min_instruction_words > self.max_instruction_words:
            raise ParameterError("MIN_INSTRUCTION_WORDS", f"{self.min_instruction_words} is above MAX_INSTRUCTION_WORDS "
                                 f"({self.max_instruction_words})", "make the minimum at most the maximum")
        self.dedup_threshold = check_float("DEDUP_THRESHOLD", self.dedup_threshold, 0.05, 1.0)
        for name in ("drop_truncated", "dry_run"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(name.upper(), f"expected True or False, got {getattr(self, name)!r}", "use True or False")
        self.shirker_fraction = check_float("SHIRKER_FRACTION", self.shirker_fraction, 0.0, 1.0)
        check_choice("SHIRKER_KIND", self.shirker_kind, shirker_kinds())
        for name, path in (("SKILLS_PATH", self.skills_file), ("QUERY_TYPES_PATH", self.query_types_file)):
            if not path.exists():
                where = f"{name}={str(path)!r}" if getattr(self, name.lower()) else f"{path} (from RUN_DIR)"
                raise ParameterError(name, f"{where} does not exist",
                                     "run notebooks/01_extract_skills.ipynb with the same RUN_DIR first, or point "
                                     f"{name} at a skills/queries file (JSONL or the official .txt)")
            check_existing_path(name, path)
        return self

    def help(self) -> dict[str, str]:
        return {f.name.upper(): f.metadata["help"] for f in fields(self)}
