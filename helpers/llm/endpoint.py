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

from ..params import check_env_var_name
from .client import ChatClient, connect

FIELDS = ("MODEL", "BASE_URL", "API_KEY_ENV")


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

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | Any, role: str) -> Endpoint:
        """Read `{role}_MODEL`, `{role}_BASE_URL`, `{role}_API_KEY_ENV` (missing ones are empty)."""
        role = role.upper().rstrip("_")
        values = [_lookup(params, f"{role}_{name}", "") for name in FIELDS]
        return cls(role, *(str(v or "") for v in values))

    @property
    def is_local(self) -> bool:
        """True when the model runs in-process (no base URL)."""
        return not self.base_url

    def validate(self) -> Endpoint:
        """Checks that need no network: the key parameter names a variable, it is not the key itself."""
        check_env_var_name(f"{self.role}_API_KEY_ENV", self.api_key_env)
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
                       **options)

