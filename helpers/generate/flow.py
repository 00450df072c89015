"""The one interface stage 2 drives: a *flow* is how one example's conversation is drawn, sent, read and described.

Two flows exist: the kit's prompt versions (`prompt_versions.PromptVersion`, generate/prompts/versions.yaml) and the
official prompt files replayed as the official script does (`official_flow.OfficialFlow`). Stage 2 and its dry-run
estimate call only the members below, so a new flow is one class (and one PROMPT_SOURCE entry in
`stage.FLOW_TYPES`), never a new branch in every function that sends, reads or records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..llm.types import Conversation
from .sampling import ExamplePlan


@dataclass(frozen=True)
class FinalPair:
    """The pair a flow read out of a finished conversation, or why it could not (`reason`)."""

    instruction: str | None
    response: str | None
    reason: str | None  # None when both fields were found
    response_turn: int | None = None  # index of the reply the response came from (its truncation is recorded)
    instruction_from: str = ""  # the turn names the record shows ("refine", "turn 3", ...)
    response_from: str = ""


class Flow(Protocol):
    """What stage 2 needs from a flow. `draw` and `skill_pool` are static: the plan is drawn before (and without)
    resolving any prompt file, e.g. for the dry run."""

    @property
    def name(self) -> str: ...

    # ---- the plan
    @staticmethod
    def skill_pool(skills: list[str]) -> list[str]:
        """The skills the plan draws from (as read from the skills file)."""
        ...

    @staticmethod
    def draw(skills: list[str], query_types: list[dict[str, Any]], num_examples: int, k: int, seed: int,
             split: str = "train") -> list[ExamplePlan]:
        """The skill mixes and query types of one split."""
        ...

    @classmethod
    def from_config(cls, config: Any) -> Flow:
        """Resolve every prompt text the run sends, before any model call (ParameterError when one is missing).
        `config` is the stage's GenerateConfig (not imported here: config.py checks names against the flows)."""
        ...

    # ---- what is sent
    def sampling(self, temperature: float | None, max_tokens: int, backend_kind: str) -> dict[str, Any]:
        """The sampling sent with every generation request."""
        ...

    async def converse(self, client: Any, plan: ExamplePlan, attempt: int, repeat: str = "",
                       **sampling: Any) -> Conversation:
        """One example's whole conversation; `attempt` and `repeat` make it a fresh sample (see sampling.py)."""
        ...

    def shirker_rules(self, examples: list[dict[str, Any]], fraction: float) -> dict[str, Any]:
        """Keyword arguments of `make_shirkers` that replace the kit's choice, request and clean-up ({} = kit's)."""
        ...

    # ---- what is read and recorded
    def read_pair(self, conv: Conversation) -> FinalPair:
        """The final instruction and response of a finished conversation."""
        ...

    def query_fields(self, plan: ExamplePlan) -> dict[str, Any]:
        """The query-type fields of a record."""
        ...

    def fingerprint(self) -> str:
        """Changes with any text sent, so stale progress is never reused."""
        ...

    def provenance(self) -> dict[str, Any]:
        """What each record says about its prompts (source, version, and a fingerprint or file, commit, sha256)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the manifest says about the prompts."""
        ...

    # ---- what the dry run counts
    @property
    def num_turns(self) -> int: ...

    @property
    def system_prompt(self) -> str | None:
        """The system message counted in every request's context (None: the flow sends none)."""
        ...

    def estimate_turns(self, plan: ExamplePlan) -> list[str]:
        """The user texts of one conversation, conditional turns counted as if always sent."""
        ...

    def shirker_prompt(self) -> str:
        """The text of a shirker request (before the instruction is filled in)."""
        ...
