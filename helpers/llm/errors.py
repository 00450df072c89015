"""The two kinds of failure a backend reports, the one place a key is read from the environment, and the redaction
every stored error message and reply text goes through.

Kept apart from the client so that backends can raise them without importing the client that dispatches to them.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable

from ..params import ParameterError


class TransientError(Exception):
    """Worth retrying: rate limits, server errors, time-outs, dropped connections, empty replies."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Retrying cannot help (bad request, unknown model, auth): record the failure at once."""


def api_key_from_env(api_key_env: str, role: str) -> str:
    """Read a key from the environment at call time; the key itself is never stored anywhere."""
    if not api_key_env:
        return "EMPTY"  # local servers (vLLM, llama.cpp, Ollama) accept any key
    value = os.environ.get(api_key_env)
    if not value:
        raise ParameterError(
            f"{role}_API_KEY_ENV", f"the environment variable {api_key_env!r} is not set",
            f"export {api_key_env}=... in the shell that starts Jupyter/papermill, or set {role}_API_KEY_ENV='' for a keyless local server",
        )
    return value


REDACTED = "[redacted]"
MIN_SECRET_CHARS = 8  # shorter values are no real keys, and replacing them would garble ordinary text
# `Bearer <token>` where the token looks like one (8+ token characters with a digit); "Bearer tokens are..." stays.
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)(?=[A-Za-z0-9\-._~+/]*\d)[A-Za-z0-9\-._~+/]{8,}=*")


def redact_secrets(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without the given key values and without any `Bearer <token>`: a server that echoes the
    Authorization header (in an error body, or in a reply) must not get the key into a file the kit writes."""
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_CHARS and secret in text:
            text = text.replace(secret, REDACTED)
    return _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def key_values(api_key_env: str | None) -> list[str]:
    """The key a backend sends (read from its variable now, never kept), as a list for `redact_secrets`."""
    value = os.environ.get(api_key_env) if api_key_env else None
    return [value] if value else []
