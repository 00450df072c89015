"""AlpacaEval's own judges, read at run time from alpaca_eval's `evaluators_configs/<name>/` (never copied).

`PAIRWISE_JUDGE="alpaca_eval:weighted_alpaca_eval_gpt4_turbo"` is the AlpacaEval 2.0 leaderboard's judge: its chat
prompt with the labels m / M, one token (`max_tokens: 1`), the five most likely first tokens (`top_logprobs: 5`) and
its temperature; the preference is what alpaca_eval's `logprob_parser` computes from them:

    preference = 2 - exp(logprob(numerator) - logsumexp(logprob(t) for t in denominators))

with exact token matches, a label absent from the top logprobs counted as logprob -inf (probability 0), and NaN
(unparsed) when no label is present. The two outputs are shown in alpaca_eval's order: reference first unless a
draw seeded by the instruction (alpaca_eval's default seed 0) swaps them, so a re-run asks the same questions.

Any other evaluator whose parser is `logprob_parser`, with one example per prompt, no pre/post-processors and the
answer read at the first token works the same way (weighted or binarised): e.g. `alpaca_eval_clf_gpt4_turbo`,
`gpt4_turbo_logprob`, `gpt4_turbo_clf`, `weighted_alpaca_eval_gpt-4o-mini-2024-07-18`. Chain-of-thought, ranking,
function-calling and regex-parsed evaluators are refused with the list of supported ones.

Where the configs come from: the installed `alpaca_eval` package when Python can find it (located with
`importlib.util.find_spec`, which does not import alpaca_eval's heavy modules), else the copy `make setup` installs
in `.venv/alpaca_eval_ref/`.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..llm.types import ChatResult, Message
from ..params import ParameterError
from ..runs import PROJECT_ROOT
from .judging import PairwiseJudgment

OWNER = "alpaca_eval"
REFERENCE_INSTALL = PROJECT_ROOT / ".venv" / "alpaca_eval_ref"
ORDER_SEED = 0  # alpaca_eval's default annotator seed, used for the output-order draw
SWITCH_SEED_PREFIX = "is_switched_outputs"
SUPPORTED_PARSER = "logprob_parser"
_PLACEHOLDER = re.compile(r"{([^ \s]+?)}")


def _version(site: Path) -> str:
    dists = list(importlib.metadata.distributions(name="alpaca_eval", path=[str(site)]))
    if dists:
        return dists[0].version
    try:
        return importlib.metadata.version("alpaca_eval")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def package_folder() -> tuple[Path, str] | None:
    """alpaca_eval's package folder and version: the importable package, else the kit's reference install."""
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0])
    else:
        folder = REFERENCE_INSTALL / "alpaca_eval"
    return (folder, _version(folder.parent)) if folder.is_dir() else None


def configs_folder(parameter: str = "PAIRWISE_JUDGE") -> tuple[Path, str]:
    found = package_folder()
    if found is None or not (found[0] / "evaluators_configs").is_dir():
        raise ParameterError(parameter, "alpaca_eval is not installed, so its judges cannot be read",
                             "run `make setup` (it installs alpaca_eval 0.6.6 into .venv/alpaca_eval_ref) or "
                             "`pip install alpaca_eval==0.6.6`")
    return found[0] / "evaluators_configs", found[1]


def _unsupported_reason(config: dict[str, Any]) -> str | None:
    if config.get("fn_completion_parser") != SUPPORTED_PARSER:
        return f"its parser is {config.get('fn_completion_parser')!r}"
    if int(config.get("batch_size", 1)) != 1:
        return "it batches several examples per prompt"
    if config.get("processors_to_kwargs"):
        return f"it needs the processors {sorted(config['processors_to_kwargs'])}"
    if (config.get("completion_parser_kwargs") or {}).get("log_prob_index", "batch") != "batch":
        return "it reads its label after a chain of thought"
    return None


def supported_evaluators(parameter: str = "PAIRWISE_JUDGE") -> list[str]:
    folder, _ = configs_folder(parameter)
    names = []
    for path in sorted(folder.glob("*/configs.yaml")):
        config = (yaml.safe_load(path.read_text()) or {}).get(path.parent.name)
        if isinstance(config, dict) and _unsupported_reason(config) is None:
            names.append(path.parent.name)
    return names


@dataclass
class AlpacaEvalJudge:
    """One alpaca_eval evaluator as the kit runs it: prompt, sampling and the logprob parser's settings."""

    name: str
    prompt_template: str
    numerator_token: str
    denominator_tokens: list[str]
    is_binarize: bool
    sampling_settings: dict[str, Any]
    config_model: str  # the judge model the evaluator was made for (the leaderboard's: gpt-4-1106-preview)
    source: dict[str, Any] = field(default_factory=dict)
    kind: str = "pairwise"
    owner: str = OWNER

    @property
    def qualified_name(self) -> str:
        return f"{OWNER}:{self.name}"

    def sampling(self) -> dict[str, Any]:
        return dict(self.sampling_settings)

    def describe(self) -> dict[str, Any]:
        return {"name": self.qualified_name, "kind": self.kind, "prompt_source": self.source,
                "sampling": self.sampling(), "labels": [self.numerator_token, *self.denominator_tokens],
                "is_binarize": self.is_binarize, "config_model": self.config_model,
                "parser": f"{SUPPORTED_PARSER} (-inf for a label missing from the top logprobs)"}


def load_alpaca_eval_judge(name: str, parameter: str = "PAIRWISE_JUDGE") -> AlpacaEvalJudge:
    """An evaluator by its alpaca_eval name (without the `alpaca_eval:` prefix)."""
    folder, version = configs_folder(parameter)
    config_path = folder / name / "configs.yaml"
    if not config_path.is_file():
        raise ParameterError(parameter, f"alpaca_eval has no evaluator {name!r}",
                             f"use one of {', '.join(supported_evaluators(parameter))}")
    config = (yaml.safe_load(config_path.read_text()) or {}).get(name) or {}
    reason = _unsupported_reason(config)
    if reason:
        raise ParameterError(parameter, f"alpaca_eval's {name!r} is not supported ({reason})",
                             f"use one of {', '.join(supported_evaluators(parameter))}")
    template_path = folder / config["prompt_template"]
    parser = config.get("completion_parser_kwargs") or {}
    completion = dict(config.get("completions_kwargs") or {})
    sampling = {"max_tokens": int(completion.get("max_tokens", 1)),
                "temperature": float(completion.get("temperature", 0.0)),
                "top_logprobs": int(completion.get("top_logprobs", 5))}
    source = {"package": "alpaca_eval", "version": version, "config": f"evaluators_configs/{name}/configs.yaml",
              "prompt": f"evaluators_configs/{config['prompt_template']}", "origin": str(folder.parent)}
    return AlpacaEvalJudge(name=name, prompt_template=template_path.read_text(),
                           numerator_token=str(parser["numerator_token"]),
                           denominator_tokens=[str(t) for t in parser["denominator_tokens"]],
                           is_binarize=bool(parser.get("is_binarize", True)), sampling_settings=sampling,
                           config_model=str(completion.get("model_name", "")), source=source)


# ------------------------------------------------------------------------------------------- prompt and order


def fill_prompt(template: str, **values: str) -> str:
    """alpaca_eval's formatting: each `{name}` placeholder found in the template is replaced once, in turn."""
    prompt = template
    for key in dict.fromkeys(_PLACEHOLDER.findall(template)):
        prompt = prompt.replace("{" + key + "}", str(values[key]), 1)
    return prompt


def chat_messages(prompt: str) -> list[Message]:
    """A `<|im_start|>role ... <|im_end|>` prompt as chat messages (what alpaca_eval sends to chat models)."""
    messages: list[Message] = []
    for block in prompt.strip().split("<|im_start|>")[1:]:
        role, _, rest = block.partition("\n")
        role = role.strip()
        content = rest.split("<|im_end|>", 1)[0].strip()
        extra = dict(item.split("=", 1) for item in role.split()[1:] if "=" in item) if role.startswith("system") else {}
        messages.append({"role": "system" if role.startswith("system") else role, "content": content, **extra})
    return messages


def is_switched(instruction: str, seed: int = ORDER_SEED) -> bool:
    """Whether the candidate is shown first: alpaca_eval's seeded draw on the instruction."""
    return random.Random(SWITCH_SEED_PREFIX + instruction + str(seed)).choices([False, True], k=1)[0]


# ------------------------------------------------------------------------------------------- the parser


def preference_from_top_logprobs(top_logprobs: dict[str, float], numerator: str, denominators: Sequence[str],
                                 binarize: bool) -> float:
    """alpaca_eval's preference (1 = the first shown output wins, 2 = the second) from one token's alternatives."""
    wanted = list(denominators) + [numerator]
    found = {token: logprob for token, logprob in top_logprobs.items() if token in wanted}
    if not found:
        return math.nan
    first = found.get(numerator, -math.inf)
    others = [found.get(t, -math.inf) for t in denominators]
    if binarize:
        rivals = [found.get(t, -math.inf) for t in denominators if t != numerator]
        return 1.0 if all(first > r for r in rivals) else 2.0
    top = max(others)
    log_total = top + math.log(sum(math.exp(x - top) for x in others)) if top > -math.inf else -math.inf
    return 2 - math.exp(first - log_total)


def preference_from_result(result: ChatResult, judge: AlpacaEvalJudge) -> float:
    """NaN where alpaca_eval records no annotation: a failed call, no logprobs, or more than one generated token."""
    if not result.ok or not result.top_logprobs or len(result.top_logprobs) != 1:
        return math.nan
    return preference_from_top_logprobs(result.top_logprobs[0], judge.numerator_token, judge.denominator_tokens,
                                        judge.is_binarize)


# ------------------------------------------------------------------------------------------- judging


def alpaca_eval_requests(judge: AlpacaEvalJudge, instructions: Sequence[str], outputs: Sequence[str],
                         reference_outputs: Sequence[str]) -> tuple[list[list[Message]], list[bool]]:
    """The judge's chats, reference as output_1 and candidate as output_2 unless the seeded draw swaps them."""
    requests, switched = [], []
    for instruction, cand, ref in zip(instructions, outputs, reference_outputs):
        swap = is_switched(instruction)
        first, second = (cand, ref) if swap else (ref, cand)
        requests.append(chat_messages(fill_prompt(judge.prompt_template, instruction=instruction,
                                                  output_1=first, output_2=second)))
        switched.append(swap)
    return requests, switched


def alpaca_eval_judgments(judge_client: Any, instructions: Sequence[str], outputs: Sequence[str],
                          reference_outputs: Sequence[str], judge: AlpacaEvalJudge,
                          desc: str = "alpaca_eval judging") -> tuple[list[PairwiseJudgment], list[float]]:
    """One judge request per item; returns the kit's judgments (candidate's side, None = unparsed) and alpaca_eval's
    preferences in its own convention (1 = reference wins, 2 = candidate wins, NaN = unparsed)."""
    if not (len(instructions) == len(outputs) == len(reference_outputs)):
        raise ValueError("instructions, outputs and reference outputs differ in length")
    requests, switched = alpaca_eval_requests(judge, instructions, outputs, reference_outputs)
    results = judge_client.chat_many(requests, desc=desc, **judge.sampling()) if requests else []
    judgments, preferences = [], []
    for i, (result, swap) in enumerate(zip(results, switched)):
        shown = preference_from_result(result, judge)
        pref = 3 - shown if swap else shown  # back to output_1 = reference, output_2 = candidate
        preferences.append(pref)
        judgments.append(PairwiseJudgment(i, swap, None if math.isnan(pref) else pref - 1,
                                          None if math.isnan(pref) else "logprobs", result.text, result.error,
                                          len(outputs[i]), len(reference_outputs[i])))
    return judgments, preferences


def annotation_records(instructions: Sequence[str], outputs: Sequence[str], reference_outputs: Sequence[str],
                       preferences: Sequence[float], generator: str, reference_generator: str,
                       judge: AlpacaEvalJudge, indices: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The judgments as alpaca_eval's annotations.json rows, so `score-alpaca-eval` (or alpaca_eval) can re-score."""
    rows = []
    for i, (instruction, out, ref, pref) in enumerate(zip(instructions, outputs, reference_outputs, preferences)):
        row = {"instruction": instruction, "output_1": ref, "generator_1": reference_generator, "output_2": out,
               "generator_2": generator, "annotator": judge.name, "preference": None if math.isnan(pref) else pref}
        if indices is not None:
            row["index"] = int(indices[i])
        rows.append(row)
    return rows
