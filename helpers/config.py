"""One way to declare, read and check a stage's parameters (in the manner of TRL's dataclass configs).

Each stage has one dataclass deriving from `StageConfig`. A field is a notebook parameter: `max_attempts` is
`MAX_ATTEMPTS` in the notebook, in a run config, on the command line and in the manifest, and its help string
(field metadata) is what `python -m helpers params` prints. The same object is built three ways:

    cfg = GenerateConfig.from_params(globals())                 # in a notebook: picks its UPPER_CASE parameters
    cfg = SFTStageConfig.load("configs/sft/paper.yaml", ["RUN_DIR=runs/x"])   # a script: YAML file + overrides
    cfg = EvalConfig(run_dir="runs/x", n_eval=20).validate()   # Python

`validate()` raises `ParameterError(name, problem, fix)` before any model is loaded. A config whose class names a
`profile_dir` (stage 3) fills every field left at None from `configs/<profile_dir>/<PROFILE>.yaml`, the single home
of a recipe's values.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from .layout import BATCHES, CONFIGS_DIR
from .params import (DEFAULT_REQUEST_ATTEMPTS, DEFAULT_REQUEST_TIMEOUT, REQUEST_ATTEMPTS_HELP, REQUEST_TIMEOUT_HELP,
                     LOCAL_DTYPES, LOCAL_ENGINES, ParameterError, check_choice, check_request_limits,
                     refuse_secret_parameters)
from .runs import run_dir_parameter

C = TypeVar("C", bound="StageConfig")

# Names that once meant different things in different notebooks. A run config, `-p` or a sweep grid that still
# passes one fails before anything runs, with the names that replaced it.
RENAMED: dict[str, str] = {
    "MAX_TOKENS": "EXTRACT_MAX_TOKENS (stage 1: longest teacher reply while extracting skills) or "
                  "GENERATE_MAX_TOKENS (stage 2: longest teacher reply per generation turn)",
    "DEDUP_THRESHOLD": "SKILL_DEDUP_THRESHOLD (stage 1: similarity at which two skills are one) or "
                       "INSTRUCTION_DEDUP_THRESHOLD (stage 2: ROUGE-L at which two instructions are one)",
}


def refuse_renamed(names: Iterable[str]) -> None:
    for name in names:
        if name in RENAMED:
            raise ParameterError(name, "was renamed because it meant a different thing in two stages",
                                 f"use {RENAMED[name]}")


def param(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING) -> Any:
    """A parameter field with its help string."""
    return field(default=default, default_factory=default_factory, metadata={"help": help})


# Parameters several notebooks declare: one default and one help each, so that a name means one thing everywhere.
# The two model names are the embedded defaults of `helpers.llm.models` (a test keeps them equal).
SHARED: dict[str, tuple[Any, str]] = {
    "run_dir": ("runs/demo", "Run folder: each stage reads the earlier stages' artifacts from it and writes its own."),
    "seed": (0, "Seed of every random choice in the stage (teacher sampling, plans, shuffles, judging order); "
                "the same seed gives the same artifacts."),
    "teacher_model": ("smollm2-135m-instruct",
                      "Teacher model (stage 4: the reference model when REFERENCE='teacher'): an endpoint's model id "
                      "(a dated snapshot), an embedded model's name, or a local checkpoint folder."),
    "teacher_base_url": ("", "OpenAI-compatible base URL of the teacher; empty runs the model in-process."),
    "teacher_api_key_env": ("", "NAME of the environment variable holding the teacher endpoint's API key "
                                "(never the key itself)."),
    "judge_model": ("smollm2-135m-instruct", "Judge model (recorded with every number): an endpoint's model id, an "
                                             "embedded model's name, or a local checkpoint folder."),
    "judge_base_url": ("", "OpenAI-compatible base URL of the judge; empty runs the model in-process."),
    "judge_api_key_env": ("", "NAME of the environment variable holding the judge endpoint's API key "
                              "(never the key itself)."),
    "max_concurrency": (8, "Requests in flight at once per model: concurrent requests to an endpoint, or the batch "
                           "size of an in-process model."),
    "base_model": ("gemma-3-270m", "The untuned base model the student is trained from (stage 3) and compared with "
                                   "(stage 4): an embedded model's name, a checkpoint folder or a hub id."),
    "temperature": (0.7, "Teacher sampling temperature (stage 1's extraction calls, stage 2's conversations); None: "
                         "not sent, the endpoint's default (1.0 on OpenAI; the official GPT-4-Turbo run sent none)."),
    "skills_path": ("", "An existing skills list (official skills.txt or skills.jsonl, or 'official:<teacher>' for "
                        "the paper's released list read through INSTRUCT_SKILLMIX_REPO) used instead of one the "
                        "teacher extracts: stage 1 imports and de-duplicates it, stage 2 reads it as given; empty: "
                        "stage 2 reads stage 1's RUN_DIR/skills.jsonl."),
    "query_types_path": ("", "An existing query-type list (official queries.txt or query_types.jsonl, or "
                             "'official:<teacher>') used instead "
                             "of one the teacher writes: stage 1 imports it, stage 2 reads it as given; empty: "
                             "stage 2 reads stage 1's RUN_DIR/query_types.jsonl."),
    "teacher_max_requests_per_minute": (None, "The teacher provider's request limit per minute for your tier; the "
                                              "client paces requests below it (None: no pacing, only backoff on 429)."),
    "teacher_max_tokens_per_minute": (None, "The teacher provider's token limit per minute (prompt + max_tokens, "
                                            "corrected by the reported usage); None: none."),
    "teacher_batch": (False, "Send the teacher's requests through the provider's Batch API (half price on OpenAI; "
                             "one batch round per conversation turn; batch ids kept in RUN_DIR so a killed run resumes "
                             "polling)."),
    "judge_max_requests_per_minute": (None, "The judge provider's request limit per minute; None: no pacing."),
    "judge_max_tokens_per_minute": (None, "The judge provider's token limit per minute; None: none."),
    "judge_batch": (False, "Send the judge's requests through the provider's Batch API (half price on OpenAI; batch "
                           "ids kept in RUN_DIR so a killed run resumes polling)."),
    "request_timeout": (DEFAULT_REQUEST_TIMEOUT, REQUEST_TIMEOUT_HELP),
    "request_attempts": (DEFAULT_REQUEST_ATTEMPTS, REQUEST_ATTEMPTS_HELP),
    "local_dtype": ("auto", "Inference precision of in-process models (an embedded or checkpoint teacher, judge or "
                            "evaluated model; stage 3's answers; not training): 'auto' (bfloat16 on a GPU and on a CPU "
                            "with bf16 instructions, AMX or AVX512-BF16, where it is about twice as fast; float32 on "
                            "other CPUs), 'float32', or 'bfloat16' (replies differ and are cached apart)."),
    "local_engine": ("auto", "What decodes in-process models' answers: 'transformers' (batched generate in this "
                             "process), 'vllm' (a vLLM server the kit starts from .venv-vllm or this environment, "
                             "waits for and stops; `make setup-vllm` installs it) or 'auto' (vLLM when it is "
                             "installed and a GPU is present, else transformers)."),
    "dry_run": (False, "Only count and price what the stage would send (requests, tokens, dollars at "
                       "helpers/llm/prices.yaml, GPU-hours) and call no model; `python -m helpers run --dry-run` "
                       "does it for every stage at once."),
    "instruct_skillmix_repo": ("", "Root of a local clone of princeton-pli/Instruct-SkillMix, read for the official "
                                   "lists, prompts and validation prompt; empty: download the pinned files into the "
                                   "kit's cache."),
}


def shared(name: str) -> Any:
    """The field of a parameter several stages share (see SHARED)."""
    default, help = SHARED[name]
    return param(default, help)


# ---------------------------------------------------------------------- reading values from text

# YAML 1.1 reads `1e-5` (no dot) as a string; a learning rate written that way is meant as a number.
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number_if_exponent(value: Any) -> Any:
    return float(value) if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()) else value


def yaml_problem(exc: Exception) -> str:
    """Where and what in a YAML error, without echoing the text (it may hold a pasted secret)."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or exc.__class__.__name__
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark else str(what)


def parse_value(text: str, name: str = "-p") -> Any:
    """A value from the command line, read as YAML: `8` is an int, `0.2` and `1e-5` floats, `true` a bool, `''` or
    nothing an empty string, `null` None (for stage 3: the profile's value)."""
    if not text.strip():
        return ""
    try:
        return _number_if_exponent(yaml.safe_load(text))
    except yaml.YAMLError as exc:  # the value is not echoed: it may be a pasted secret
        raise ParameterError(name, f"the value given with -p is not valid YAML ({yaml_problem(exc)})",
                             "quote text that starts with [ { : or contains ': ', e.g. -p NAME \"'text'\"") from None


def parse_assignment(text: str, option: str = "--set") -> tuple[str, Any]:
    """`NAME=VALUE` (the value read as YAML)."""
    if "=" not in text:
        raise ParameterError(option, f"{text!r} is not NAME=VALUE", f"write e.g. {option} MAX_STEPS=10")
    name, raw = text.split("=", 1)
    return name.strip(), parse_value(raw, name.strip())


def read_params_file(path: str | Path, option: str = "--config") -> dict[str, Any]:
    """A YAML mapping of `NAME: value` parameters (a run config, a stage profile)."""
    file = Path(path)
    if not file.is_file():
        raise ParameterError(option, f"{path} does not exist or is not a file", "give a YAML file of NAME: value lines, e.g. "
                             "one of configs/*.yaml")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = yaml_problem(exc) if isinstance(exc, yaml.YAMLError) else "it is not UTF-8 text"
        raise ParameterError(option, f"{path} is not valid YAML ({problem})", "write one `NAME: value` per line") from None
    if not isinstance(data, dict):
        raise ParameterError(option, f"{path} is not a mapping of NAME: value", "write one `NAME: value` per line")
    return {str(k): _number_if_exponent(v) for k, v in data.items()}


def merge_overrides(values: dict[str, Any], overrides: Mapping[str, Any] | Iterable[str] | None,
                    option: str = "--set") -> dict[str, Any]:
    """`values` with `overrides` applied: a mapping, or `NAME=VALUE` strings from the command line."""
    out = dict(values)
    if isinstance(overrides, Mapping):
        out.update(overrides)
    else:
        out.update(parse_assignment(item, option) for item in overrides or [])
    return out


# ---------------------------------------------------------------------- the base class

@dataclass
class StageConfig:
    """Base of every stage's parameters. Subclasses declare fields with `param(...)` / `shared(...)` and check
    their values in `check_values()` and the files earlier stages write in `check_inputs()`."""

    profile_dir: ClassVar[str | None] = None  # configs/<profile_dir>/<PROFILE>.yaml fills fields left at None

    def __post_init__(self) -> None:
        if isinstance(getattr(self, "run_dir", None), str):
            # a relative RUN_DIR is relative to the project root, whatever the working directory (JupyterLab runs
            # notebooks in notebooks/): the command line, papermill and JupyterLab see one run folder
            self.run_dir = run_dir_parameter(self.run_dir)
        if self.profile_dir:
            self._apply_profile()

    def connect(self, endpoint: Any, stage: str, **options: Any) -> Any:
        """A client for an `Endpoint` (`cfg.teacher()`, `cfg.judge()`, ...) with this run's MAX_CONCURRENCY,
        REQUEST_TIMEOUT, REQUEST_ATTEMPTS and batch journals in RUN_DIR: how every stage connects, so a shared
        parameter means the same everywhere. A bad endpoint, model or key raises `ParameterError` here."""
        options = {"request_timeout_s": self.request_timeout, "max_attempts": self.request_attempts,
                   "batch_dir": Path(self.run_dir) / BATCHES, "local_dtype": self.local_dtype,
                   "local_engine": self.local_engine, **options}
        return endpoint.connect(self.max_concurrency, stage=stage, **options)

    # -------------------------------------------------------------- names, defaults, help
    @classmethod
    def parameter_names(cls) -> list[str]:
        return [f.name.upper() for f in fields(cls)]

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name.upper(): f.metadata.get("help", "") for f in fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name.upper(): f.default if f.default_factory is MISSING else f.default_factory()
                for f in fields(cls)}

    def as_params(self) -> dict[str, Any]:
        """The UPPER_CASE parameters (for the manifest and printed tables)."""
        return {f.name.upper(): getattr(self, f.name) for f in fields(self)}

    # -------------------------------------------------------------- building
    @classmethod
    def from_params(cls: type[C], namespace: Mapping[str, Any], *, strict: bool = False, inputs: bool = True) -> C:
        """Build from UPPER_CASE names (a notebook's `globals()`, a run config) and validate.

        Other names are ignored (a notebook's globals hold more than its parameters) unless `strict`; a renamed
        parameter always fails with its new name. `inputs=False` skips the checks of files earlier stages write
        (the pipeline driver checks every stage before the first one has run).
        """
        refuse_secret_parameters(namespace)  # first: nothing below may echo a pasted key
        refuse_renamed(namespace)
        names = set(cls.parameter_names())
        if strict:
            unknown = sorted(k for k in namespace if k not in names)
            if unknown:
                raise ParameterError(unknown[0], f"is not a parameter of {cls.__name__}",
                                     f"use one of {', '.join(sorted(names))}")
        cfg = cls(**{k.lower(): v for k, v in namespace.items() if k in names})
        return cfg.validate(inputs=inputs)

    @classmethod
    def load(cls: type[C], path: str | Path | None = None,
             overrides: Mapping[str, Any] | Iterable[str] | None = None) -> C:
        """A YAML file of UPPER_CASE parameters, then `overrides` (`NAME=VALUE` strings or a mapping); unknown
        names fail. What `python -m helpers.sft --config FILE --set NAME=VALUE` runs."""
        values = read_params_file(path) if path else {}
        return cls.from_params(merge_overrides(values, overrides), strict=True)

    # -------------------------------------------------------------- checking
    def validate(self: C, *, inputs: bool = True) -> C:
        """Raise ParameterError naming the first wrong parameter; returns self for chaining."""
        for f in fields(self):
            if getattr(self, f.name) is None and f.default is None and self.profile_dir and f.name not in SHARED:
                profile = getattr(self, "profile", "")
                raise ParameterError(f.name.upper(), f"is not set and PROFILE={profile!r} gives no value",
                                     f"set it, or add it to configs/{self.profile_dir}/{profile}.yaml")
        self._check_shared()
        self.check_values()
        if inputs:
            self.check_inputs()
        return self

    def _check_shared(self) -> None:
        """Checks of the shared parameters a stage declares, the same in every stage."""
        if hasattr(self, "request_timeout"):
            self.request_timeout, self.request_attempts = check_request_limits(self.request_timeout,
                                                                               self.request_attempts)
        if hasattr(self, "local_dtype"):
            check_choice("LOCAL_DTYPE", self.local_dtype, LOCAL_DTYPES)
        if hasattr(self, "local_engine"):  # whether vLLM is installed is checked when a model is connected
            check_choice("LOCAL_ENGINE", self.local_engine, LOCAL_ENGINES)
        if not isinstance(getattr(self, "dry_run", False), bool):
            raise ParameterError("DRY_RUN", f"expected True or False, got {getattr(self, 'dry_run')!r}",
                                 "use True or False")

    def check_values(self) -> None:
        """The stage's checks of its own values (override)."""

    def check_inputs(self) -> None:
        """The stage's checks of files an earlier stage writes (override)."""

    # -------------------------------------------------------------- profiles
    @classmethod
    def profiles(cls) -> list[str]:
        return sorted(p.stem for p in (CONFIGS_DIR / str(cls.profile_dir)).glob("*.yaml"))

    @classmethod
    def profile_values(cls, profile: str) -> dict[str, Any]:
        """A profile's parameters, checked to be this stage's."""
        check_choice("PROFILE", profile, cls.profiles())
        path = CONFIGS_DIR / str(cls.profile_dir) / f"{profile}.yaml"
        values = read_params_file(path, "PROFILE")
        names = set(cls.parameter_names())
        unknown = sorted(set(values) - names)
        if unknown:
            raise ParameterError("PROFILE", f"{path.name} names {unknown[0]}, which is not a parameter of "
                                 f"{cls.__name__}", f"fix configs/{cls.profile_dir}/{path.name}")
        return values

    def _apply_profile(self) -> None:
        """Fill every field left at None from the profile (a None-default field is a recipe value)."""
        values = self.profile_values(getattr(self, "profile"))
        for f in fields(self):
            if getattr(self, f.name) is None and f.name.upper() in values:
                setattr(self, f.name, values[f.name.upper()])
