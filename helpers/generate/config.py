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
from ..skills.official_lists import is_official, official_list_path
from .official_prompts import DEFAULT_OFFICIAL_VERSION, PROMPT_SOURCES
from .prompt_versions import get_version, prompt_version_names, shirker_kinds


@dataclass
class GenerateConfig(StageConfig):
    """Stage 2: how many examples, how the teacher is asked, what the filters drop, how many shirkers."""

    run_dir: str = shared("run_dir")
    seed: int = shared("seed")
    teacher_model: str = shared("teacher_model")
    teacher_base_url: str = shared("teacher_base_url")
    teacher_api_key_env: str = shared("teacher_api_key_env")
    max_concurrency: int = shared("max_concurrency")
    request_timeout: float = shared("request_timeout")
    request_attempts: int = shared("request_attempts")
    local_dtype: str = shared("local_dtype")
    local_engine: str = shared("local_engine")
    teacher_max_requests_per_minute: float | None = shared("teacher_max_requests_per_minute")
    teacher_max_tokens_per_minute: float | None = shared("teacher_max_tokens_per_minute")
    teacher_batch: bool = shared("teacher_batch")
    skills_path: str = shared("skills_path")
    query_types_path: str = shared("query_types_path")
    num_examples: int = param(6, "Training examples to plan (the paper: 1K-4K). Failed or filtered ones are not "
                                 "replaced.")
    num_heldout: int = param(2, "Held-out examples (drawn with a seed derived from SEED) used to pick the best SFT "
                                "checkpoint (the paper: 100).")
    k_skills: int = param(2, "Skills combined in each example (the paper's k = 2).")
    prompt_source: str = param("kit", "'kit' (the kit's own prompts, for offline use) or 'official' (the paper's "
                                      "prompt files, read at run time from INSTRUCT_SKILLMIX_REPO or a pinned "
                                      "download, replayed as the official script does).")
    prompt_version: str = param("paper_compact", "With PROMPT_SOURCE='kit': a turn sequence from "
                                                 "generate/prompts/versions.yaml ('paper' = generate, critique, "
                                                 "refine; 'paper_compact' the same turns with a shorter first prompt, "
                                                 "the CPU demo). With 'official': an official prompt file without "
                                                 "'.json' (a kit name stands for "
                                                 "'generate_gpt-4-turbo-2024-04-09').")
    instruct_skillmix_repo: str = shared("instruct_skillmix_repo")
    official_system_template: str = param("auto", "With PROMPT_SOURCE='official': the system message sent first. "
                                                  "'auto' = the FastChat conversation template the official run used "
                                                  "for this teacher (none for Claude), 'none', or a template name of "
                                                  "the vendored conversation.py.")
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
    dry_run: bool = shared("dry_run")

    @property
    def official_prompt_version(self) -> str:
        """The official prompt file to replay (a kit version name stands for the default official file)."""
        if not self.prompt_version or self.prompt_version in prompt_version_names():
            return DEFAULT_OFFICIAL_VERSION
        return self.prompt_version

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
        check_choice("PROMPT_SOURCE", self.prompt_source, PROMPT_SOURCES)
        if self.prompt_source == "kit":
            get_version(self.prompt_version)
        elif "/" in self.official_prompt_version or self.official_prompt_version.endswith(".json"):
            raise ParameterError("PROMPT_VERSION", f"{self.prompt_version!r} is not an official prompt file name",
                                 "name a file of the official prompts folder without '.json', e.g. "
                                 f"{DEFAULT_OFFICIAL_VERSION!r}")
        if self.instruct_skillmix_repo:
            check_existing_path("INSTRUCT_SKILLMIX_REPO", self.instruct_skillmix_repo, "folder")
        if not self.official_system_template:
            raise ParameterError("OFFICIAL_SYSTEM_TEMPLATE", "is empty", "use 'auto', 'none' or a FastChat template name")
        if self.temperature is not None:
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
            if is_official(getattr(self, name.lower())):
                official_list_path(name, getattr(self, name.lower()))  # fetched when the stage starts
                continue
            if not path.exists():
                where = f"{name}={str(path)!r}" if getattr(self, name.lower()) else f"{path} (from RUN_DIR)"
                raise ParameterError(name, f"{where} does not exist",
                                     "run notebooks/01_extract_skills.ipynb with the same RUN_DIR first, or point "
                                     f"{name} at a skills/queries file (JSONL or the official .txt)")
            check_existing_path(name, path)
