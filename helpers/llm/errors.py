"""The two kinds of failure a backend reports, and the one place a key is read from the environment.

Kept apart from the client so that backends can raise them without importing the client that dispatches to them.
"""
from __future__ import annotations

import os

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
