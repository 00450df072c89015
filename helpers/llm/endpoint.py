"""Where a model lives, named once per role: `Endpoint(role, model, base_url, api_key_env)`.

Every notebook names a model with three parameters under a role prefix (`TEACHER_MODEL`, `TEACHER_BASE_URL`,
`TEACHER_API_KEY_ENV`; the same for `JUDGE_` and `STUDENT_`) and shares one `MAX_CONCURRENCY`. `Endpoint.from_params`
reads the three from a parameter mapping or a config object, and `endpoint.connect(max_concurrency, stage=...)`
turns them into a `ChatClient`, so the tuple is spelled out in one place only.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..params import ParameterError, check_env_var_name
from .client import ChatClient, connect, rate_limiter_from_params

FIELDS = ("MODEL", "BASE_URL", "API_KEY_ENV")
LIMIT_FIELDS = ("MAX_REQUESTS_PER_MINUTE", "MAX_TOKENS_PER_MINUTE")


def _lookup(params: Mapping[str, Any] | Any, name: str, default: str) -> str:
    """`name` in UPPER_CASE or lower_case, from a mapping (notebook globals) or an object (a stage config)."""
    for key in (name, name.lower()):
        if isinstance(params, Mapping):
            if key in params:
                return params[key]
        elif hasattr(params, key):
            return getattr(params, key)
    return default


@dataclass(frozen=True)
class Endpoint:
    """One role's model: an endpoint id with its base URL and key variable, or (empty base URL) an in-process model."""

    role: str
    model: str = ""
    base_url: str = ""
    api_key_env: str = ""
    max_requests_per_minute: float | None = None  # the provider's limits: requests are paced below them
    max_tokens_per_minute: float | None = None
    batch: bool = False  # through the provider's Batch API (at batch prices) instead of live calls

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | Any, role: str) -> Endpoint:
        """Read `{role}_MODEL`, `{role}_BASE_URL`, `{role}_API_KEY_ENV` (missing ones are empty) and, where the
        stage has them, `{role}_MAX_REQUESTS_PER_MINUTE`, `{role}_MAX_TOKENS_PER_MINUTE` and `{role}_BATCH`."""
        role = role.upper().rstrip("_")
        values = [_lookup(params, f"{role}_{name}", "") for name in FIELDS]
        limits = [_lookup(params, f"{role}_{name}", None) for name in LIMIT_FIELDS]
        batch = _lookup(params, f"{role}_BATCH", False)
        return cls(role, *(str(v or "") for v in values), *limits, batch)

    @property
    def is_local(self) -> bool:
        """True when the model runs in-process (no base URL)."""
        return not self.base_url

    def validate(self) -> Endpoint:
        """Checks that need no network: the key parameter names a variable, it is not the key itself."""
        check_env_var_name(f"{self.role}_API_KEY_ENV", self.api_key_env)
        rate_limiter_from_params(self.role, self.max_requests_per_minute, self.max_tokens_per_minute)
        if not isinstance(self.batch, bool):
            raise ParameterError(f"{self.role}_BATCH", f"expected True or False, got {self.batch!r}", "use True or False")
        if self.batch and self.is_local:
            raise ParameterError(f"{self.role}_BATCH", "is True but the model runs in-process (no endpoint)",
                                 f"set {self.role}_BASE_URL to a server with the batch endpoints or {self.role}_BATCH=False")
        return self

    def as_params(self) -> dict[str, str]:
        """The notebook parameters this endpoint came from."""
        return {f"{self.role}_MODEL": self.model, f"{self.role}_BASE_URL": self.base_url,
                f"{self.role}_API_KEY_ENV": self.api_key_env}

    def connect(self, max_concurrency: int = 8, *, stage: str = "", **options: Any) -> ChatClient:
        """A client for this endpoint; `options` go to `helpers.llm.client.connect` (cache_path, chat_template, ...).

        A wrong endpoint, unknown model or missing key raises `ParameterError` naming this role's parameter.
        """
        return connect(self.model, self.base_url, self.api_key_env, max_concurrency, stage=stage, role=self.role,
                       max_requests_per_minute=self.max_requests_per_minute,
                       max_tokens_per_minute=self.max_tokens_per_minute, batch=self.batch, **options)

