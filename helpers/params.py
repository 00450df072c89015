"""Parameter checks that fail before any model call, with messages that name the parameter and the fix.

Every notebook validates its `parameters` cell through these functions first, so a typo costs a second,
not an hour of paid generation.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class ParameterError(ValueError):
    """A user-supplied parameter is wrong. The message names the parameter and says how to fix it."""

    def __init__(self, name: str, problem: str, fix: str) -> None:
        self.name, self.problem, self.fix = name, problem, fix
        super().__init__(f"{name}: {problem}. Fix: {fix}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ParameterError(name, f"got {value!r}", f"use one of {', '.join(repr(c) for c in choices)}")
    return value


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ParameterError(name, f"expected a whole number, got {value!r}", "pass an integer, e.g. 8")
    _check_bounds(name, value, low, high)
    return value


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, f"expected a number, got {value!r}", "pass a number, e.g. 0.2")
    _check_bounds(name, float(value), low, high)
    return float(value)


def _check_bounds(name: str, value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise ParameterError(name, f"{value} is below the minimum {low}", f"use a value >= {low}")
    if high is not None and value > high:
        raise ParameterError(name, f"{value} is above the maximum {high}", f"use a value <= {high}")


def check_existing_path(name: str, value: str | Path, kind: str = "file") -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise ParameterError(name, f"{str(value)!r} does not exist", f"point {name} at an existing {kind}, or leave it empty")
    return path


# ------------------------------------------------------------------------------------------------ requests
# REQUEST_TIMEOUT / REQUEST_ATTEMPTS, shared by every notebook that reaches a model: one HTTP request may take this
# long (a 2,048-token reply from a busy server fits) and is sent this many times at most, so a hung server shows up
# within minutes (as calls waiting and retries in the progress bar), not after hours.
DEFAULT_REQUEST_TIMEOUT = 300.0
DEFAULT_REQUEST_ATTEMPTS = 4
REQUEST_TIMEOUT_HELP = ("Seconds one request to an endpoint may take before it counts as failed and is sent again; "
                        "a hung server shows as calls waiting and retries in the progress bar.")
REQUEST_ATTEMPTS_HELP = ("How often one request is sent (time-outs, 429, 5xx, dropped connections) before it "
                         "counts as failed.")


# Inference precisions of in-process models (LOCAL_DTYPE): 'auto' is the fastest one the device computes natively
# (helpers.llm.device): bfloat16 on a GPU and on a CPU with bf16 instructions, float32 on other CPUs.
LOCAL_DTYPES = ("auto", "float32", "bfloat16")
# What decodes in-process models' answers (LOCAL_ENGINE): 'auto' is vLLM where it is installed and a GPU is present.
LOCAL_ENGINES = ("auto", "transformers", "vllm")


def make_writable_folder(path: Path, parameter: str, fix: str) -> Path:
    """Create `path` (and its parents) and make sure files can be written there: a folder under a file, in /sys or
    on a read-only disk is the parameter's error, not an OSError from deep inside a stage."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(parameter, f"cannot create the folder {path} ({exc.strerror or exc})", fix) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ParameterError(parameter, f"cannot write into {path} (read-only or not yours)", fix)
    return path


def check_request_limits(timeout: Any, attempts: Any) -> tuple[float, int]:
    return check_float("REQUEST_TIMEOUT", timeout, 0.001, 86_400), check_int("REQUEST_ATTEMPTS", attempts, 1, 100)


# ------------------------------------------------------------------------------------------------ secrets
# The rule for `*_API_KEY_ENV` values: a NAME matches ENV_NAME and does not look like a key. A key is recognised by a
# known vendor prefix, by characters no name has (`-`, `.`, spaces...), by letters and digits that alternate like
# random text (3+ switches in one `_`-separated part: `a1b2`, `x9Kq2Lm7`), by a part of 20+ characters (no word is
# that long), or by lower-case letters with digits and no `_` (`hunter2`). Refused values are never echoed.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KEY_PREFIXES = ("sk-", "sk_", "pk-", "pk_", "rk_", "gsk_", "hf_", "xai-", "ghp_", "gho_", "github_pat_", "glpat-",
                "AIza", "r8_", "nvapi-", "key-", "sess-", "Bearer", "bearer", "eyJ")  # case matters: HF_TOKEN is a name
SECRET_QUERY_KEYS = ("key", "api_key", "apikey", "api-key", "token", "access_token", "secret", "sig", "signature",
                     "password", "auth")


def looks_random(part: str) -> bool:
    """Letters and digits that switch back and forth 3+ times (`a1b2`, `x9Kq2Lm7`): random text, as keys are."""
    return sum(a.isdigit() != b.isdigit() for a, b in zip(part, part[1:]) if a.isalnum() and b.isalnum()) >= 3


def _key_like_reason(value: str) -> str | None:
    """Why `value` reads as a pasted key rather than a variable name, or None."""
    if value.startswith(KEY_PREFIXES):
        return "it looks like an API key (a known key prefix)"
    if any(c.isspace() for c in value) or any(c in value for c in "-.:/+=~"):
        return "it has characters no variable name has (a key or a token, perhaps)"
    for part in value.split("_"):
        if looks_random(part) or len(part) >= 20:
            return "it looks random, like a key"
    if "_" not in value and not value.isupper() and any(c.isdigit() for c in value):
        return "it mixes lower-case letters and digits without an _, like a short key or password"
    return None


def check_env_var_name(name: str, value: str) -> str:
    """The *_API_KEY_ENV parameters hold the name of a variable, never the key itself (rule above)."""
    if not value:
        return value
    if not isinstance(value, str):
        raise ParameterError(name, f"expected the name of an environment variable, got a {type(value).__name__}",
                             "use a name like 'OPENAI_API_KEY'")
    reason = _key_like_reason(value)
    if reason is None and not ENV_NAME.match(value):
        reason = "a variable name holds only letters, digits and _ and does not start with a digit"
    if reason:
        raise ParameterError(
            name, f"this is not the name of an environment variable: {reason} (the value is not shown or stored)",
            f"export the key in the shell (e.g. `export OPENAI_API_KEY=...`) and set {name}='OPENAI_API_KEY'; "
            "keys never go into parameters",
        )
    return value


# A query parameter is a credential when its name says so (a part of it, split at `-`, `_`, `.` and case changes,
# is or ends in one of these words: `subscription-key`, `x-api-key`, `X-Amz-Signature`, `sas_token`, Azure's
# `code`), or when its value looks like a key whatever the name (a key prefix, or random-looking text by the rule of
# `*_API_KEY_ENV` values). Such URLs are refused before anything records them, and stripped where one is recorded.
SECRET_NAME_WORDS = ("key", "token", "secret", "sig", "signature", "password", "passwd", "pwd", "auth",
                     "credential", "credentials", "hmac", "code", "session", "jwt")


def _name_parts(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [p for p in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if p]


def secret_query_item(name: str, value: str) -> bool:
    """True when this query parameter of a URL is (or looks like) a credential; see the rule above."""
    if name.lower() in SECRET_QUERY_KEYS or any(part.endswith(SECRET_NAME_WORDS) for part in _name_parts(name)):
        return True
    value = value.strip()
    if value.startswith(KEY_PREFIXES):
        return True
    return any(looks_random(part) or (len(part) >= 20 and not part.isalpha())
               for part in re.split(r"[^A-Za-z0-9]+", value))


def check_base_url(name: str, value: str) -> str:
    """A *_BASE_URL must not carry credentials (`user:password@host`, a key in any query parameter): those would be
    recorded."""
    if not value or not isinstance(value, str):
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ParameterError(name, "is not a valid URL (it is not shown)", "use a URL such as http://localhost:8000/v1") from None
    secret_query = [k for k, v in parse_qsl(parts.query, keep_blank_values=True) if secret_query_item(k, v)]
    if parts.username or parts.password or "@" in parts.netloc or secret_query:
        raise ParameterError(
            name, "the URL carries credentials (user:password@, or a query parameter that names or looks like a "
            "key); it is not shown or stored",
            f"remove them from {name} and put the key in an environment variable named by the matching *_API_KEY_ENV",
        )
    return value


def redact_url(url: str) -> str:
    """The URL as it may be recorded: no `user:password@`, no query parameter that is or looks like a credential."""
    if not url or not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unreadable URL, not recorded)"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    items = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in items if not secret_query_item(k, v)]
    query = parts.query if len(kept) == len(items) else urlencode(kept)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_secret_parameters(params: Mapping[str, Any]) -> None:
    """Every `*_API_KEY_ENV` is a variable name and every `*_BASE_URL` is free of credentials; run before anything
    (a notebook, a manifest, a sweep's grid file) can store the values."""
    for key, value in params.items():
        upper = str(key).upper()
        if upper.endswith("_API_KEY_ENV"):
            check_env_var_name(str(key), value)
        elif upper.endswith("_BASE_URL"):
            check_base_url(str(key), value)


# What a notebook's own check adds: papermill started directly writes its parameters into the output notebook before
# the kernel runs anything, so the refusal says where the value now is (docs/papermill.md).
PAPERMILL_NOTE = ("if papermill was started directly, it has already written this value into its output notebook "
                  "(the injected-parameters cell and metadata.papermill.parameters): delete that notebook, rotate the "
                  "key, and run through `python -m helpers run`, which refuses before writing anything "
                  "(docs/papermill.md)")


def refuse_secret_parameters(namespace: Mapping[str, Any]) -> None:
    """`check_secret_parameters` as the first check of a stage's parameters (its config's `from_params`), before
    anything can print or store them; the refusal also says what papermill may already have written."""
    try:
        check_secret_parameters(namespace)
    except ParameterError as exc:
        raise ParameterError(exc.name, exc.problem, f"{exc.fix}; {PAPERMILL_NOTE}") from None
