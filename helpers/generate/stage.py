"""Stage 2 end to end: plan -> converse (retry unparseable examples) -> filter -> shirkers -> save.

Resumable twice over: every successful call is in the content-addressed cache, and every finished example is
appended to `data/progress_<split>.jsonl` (`layout.progress_file`) the moment it is done (tagged with a fingerprint of everything that
determines it), so a killed run re-run with the same parameters skips finished examples and re-pays no completed
call of unfinished ones. Examples recorded as failed (an outage, a parse failure) are tried again by a re-run,
which says how many.

Retry policy: an example whose final pair cannot be parsed is asked again with the SAME skills and query type but a
new cache salt (a fresh sample). Keeping the plan fixed means parse failures never bias which skill mixes end up in
the data, and the plan stays a pure function of SEED. A plan whose prompt repeats an earlier plan's (same skills,
same query type: frequent with short skill lists) gets a salt of its own too, so it is a separate sample.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import layout
from ..jsonl import JsonlAppender, read_jsonl, write_jsonl
from ..llm.loopgc import frozen_heap
from ..llm.types import Conversation
from ..params import ParameterError
from .config import GenerateConfig
from .filters import FILTER_REASONS, FilterOutcome, filter_examples, text_features
from .files import read_query_types_file, read_skills_file, save_hf_dataset, save_official_json, start_loading_datasets
from .flow import Flow
from .official_flow import OfficialFlow
from .prompt_versions import PromptVersion
from .sampling import ExamplePlan, derive_seed, pair_report, repeat_salts
from ..skills.official_lists import is_official, resolve_list
from .shirkers import ShirkerStats, make_shirkers
from ..swap import replace_together


class GenerationError(RuntimeError):
    """Stage 2 produced nothing the SFT stage could train on."""


# ---------------------------------------------------------------- inputs and plan
# The flow of each PROMPT_SOURCE: the kit's turn sequences, or an official prompt file replayed (see flow.py).
FLOW_TYPES: dict[str, type[Flow]] = {"kit": PromptVersion, "official": OfficialFlow}


def flow_type(config: GenerateConfig) -> type[Flow]:
    return FLOW_TYPES[config.prompt_source]


def load_flow(config: GenerateConfig) -> Flow:
    """The turns stage 2 sends: a kit version, or (PROMPT_SOURCE='official') the official files resolved now,
    before any model call."""
    return flow_type(config).from_config(config)


def input_files(config: GenerateConfig) -> tuple[Path, Path, dict[str, Any]]:
    """The skills and query-type files; 'official:<teacher>' values are fetched (and described for the manifest)."""
    paths, described = [], {}
    for name, path in (("SKILLS_PATH", config.skills_file), ("QUERY_TYPES_PATH", config.query_types_file)):
        value = getattr(config, name.lower())
        if is_official(value):
            file = resolve_list(name, value, config.instruct_skillmix_repo)
            path, described[name] = file.local_path, file.describe()
        paths.append(path)
    return paths[0], paths[1], described


def load_stage1_inputs(config: GenerateConfig) -> tuple[list[str], list[dict[str, Any]]]:
    """Skills and query types. The official flow samples from every line as given (duplicates included, as the
    official script does); the kit draws from the distinct skills. An official skills.txt is read line by line."""
    skills_file, query_types_file, _ = input_files(config)
    skills = read_skills_file(skills_file, "none" if is_official(config.skills_path) else "auto")
    skills = flow_type(config).skill_pool(skills)
    query_types = read_query_types_file(query_types_file)
    if len(skills) < config.k_skills:
        raise ParameterError("K_SKILLS", f"{config.k_skills} skills per example but only {len(skills)} distinct skills "
                             f"in {config.skills_file}", "lower K_SKILLS or extract more skills in stage 1")
    if not query_types:
        raise ParameterError("QUERY_TYPES_PATH", f"no query types in {config.query_types_file}",
                             "run stage 1 or point QUERY_TYPES_PATH at a queries file")
    return skills, query_types


def heldout_seed(seed: int) -> int:
    return derive_seed(seed, "heldout")


def make_plans(config: GenerateConfig, skills: list[str], query_types: list[dict[str, Any]]
               ) -> tuple[list[ExamplePlan], list[ExamplePlan]]:
    draw = flow_type(config).draw
    train = draw(skills, query_types, config.num_examples, config.k_skills, config.seed, "train")
    heldout = draw(skills, query_types, config.num_heldout, config.k_skills, heldout_seed(config.seed), "heldout")
    return train, heldout


# ---------------------------------------------------------------- one split
def example_fingerprint(plan: ExamplePlan, config: GenerateConfig, version: Flow, model: str,
                        prompts: str | None = None) -> str:
    """`prompts`: `version.fingerprint()`, when the caller has it already (it reads every prompt file)."""
    payload = json.dumps({
        "id": plan.example_id, "skills": plan.skills, "query_type": plan.query_type, "version": version.name,
        "prompts": prompts if prompts is not None else version.fingerprint(), "model": model,
        "temperature": config.temperature,
        "max_tokens": config.generate_max_tokens,
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def sampling_for(config: GenerateConfig, version: Flow, client: Any) -> dict[str, Any]:
    """The sampling sent with every generation request (TEMPERATURE None: not sent; see OfficialFlow.sampling)."""
    backend_kind = getattr(getattr(client, "backend", None), "kind", "")
    return version.sampling(config.temperature, config.generate_max_tokens, backend_kind)


def _record(plan: ExamplePlan, conv: Conversation, version: Flow, attempt: int, model: str,
            tokens: tuple[int, int]) -> dict[str, Any] | None:
    pair = version.read_pair(conv)
    if pair.reason is not None:
        return None
    return {
        "example_id": plan.example_id, "split": plan.split,
        "instruction": pair.instruction, "input": "", "output": pair.response,
        "skills_joined_str": plan.skills_joined_str, **version.query_fields(plan), "generator": model,
        "skills": list(plan.skills), "k": len(plan.skills), "seed": plan.seed, **version.provenance(),
        "shirker": None, "input_tokens": tokens[0], "output_tokens": tokens[1], "attempt": attempt,
        "truncated": conv.results[pair.response_turn].truncated,
        "instruction_from_turn": pair.instruction_from, "response_from_turn": pair.response_from,
        "transcript": conv.messages,
    }


def _parse_failure_reason(conv: Conversation, version: Flow) -> str:
    if not conv.ok:
        return f"call failed: {conv.error}"
    return version.read_pair(conv).reason or "unknown"


async def _generate_one(client: Any, plan: ExamplePlan, version: Flow, config: GenerateConfig,
                        fingerprint: str, progress: JsonlAppender, repeat: str = "") -> dict[str, Any]:
    sampling = sampling_for(config, version, client)
    reasons: list[str] = []
    tokens_in = tokens_out = 0
    conv = Conversation()
    for attempt in range(1, config.max_attempts + 1):
        conv = await version.converse(client, plan, attempt, repeat=repeat, **sampling)
        tokens_in, tokens_out = tokens_in + conv.input_tokens, tokens_out + conv.output_tokens
        record = _record(plan, conv, version, attempt, client.model, (tokens_in, tokens_out)) if conv.ok else None
        if record is not None:
            text_features(record["instruction"])  # the near-duplicate filter's work, done while others wait
            entry = {"fingerprint": fingerprint, "status": "ok", "record": record}
            progress.append(entry)
            return entry
        reasons.append(_parse_failure_reason(conv, version))
    failure = {
        "example_id": plan.example_id, "split": plan.split, "skills": list(plan.skills),
        "skills_joined_str": plan.skills_joined_str, "query_type": plan.query_type["name"],
        "prompt_version": version.name, "generator": client.model, "attempts": config.max_attempts,
        "reasons": reasons, "input_tokens": tokens_in, "output_tokens": tokens_out, "transcript": conv.messages,
    }
    entry = {"fingerprint": fingerprint, "status": "failed", "record": failure}
    progress.append(entry)
    return entry


def resume_entries(progress_path: Path, fingerprints: dict[str, str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Examples an earlier (possibly killed) run with the same parameters finished, and those it recorded as failed.

    Failed examples are never taken as done: a re-run tries them again (after an outage that is the whole point),
    and every call that succeeded before comes from the cache, so only what failed is paid again.
    """
    done: dict[str, dict[str, Any]] = {}
    failed: set[str] = set()
    for entry in read_jsonl(progress_path, tolerate_torn=True):
        rec = entry.get("record") or {}
        eid = rec.get("example_id")
        if eid not in fingerprints or entry.get("fingerprint") != fingerprints[eid]:
            continue
        if entry.get("status") == "ok":
            done[eid] = entry
        else:
            failed.add(eid)
    return done, failed - set(done)


def generate_splits(client: Any, splits: dict[str, tuple[list[ExamplePlan], Path]], version: Flow,
                    config: GenerateConfig, desc: str = "examples", resume: dict[str, int] | None = None,
                    log: Any = print) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Examples (in plan order) and failures per split. Every conversation of every split is in flight at once,
    bounded by the client's MAX_CONCURRENCY (a local teacher batches them); each finished example is appended to
    its split's progress file immediately. `resume` (if given) receives how many examples came from an earlier run
    and how many that failed there were tried again."""
    prompts = version.fingerprint()
    fps = {p.example_id: example_fingerprint(p, config, version, client.model, prompts)
           for plans, _ in splits.values() for p in plans}
    repeats = repeat_salts([p for plans, _ in splits.values() for p in plans])
    done: dict[str, dict[str, Any]] = {}
    retried: set[str] = set()
    for plans, progress_path in splits.values():
        finished, failed = resume_entries(Path(progress_path), {p.example_id: fps[p.example_id] for p in plans})
        done.update(finished)
        retried |= failed
    if retried:
        log(f"Trying again {len(retried)} example(s) that failed in an earlier run (calls that succeeded then come "
            "from the cache).")
    if resume is not None:
        resume.update(resumed=len(done), retried=len(retried))
    todo = [(p, path) for plans, path in ((plans, Path(path)) for plans, path in splits.values())
            for p in plans if p.example_id not in done]
    total = sum(len(plans) for plans, _ in splits.values())

    ok = sum(e["status"] == "ok" for e in done.values())

    def finished(_: int, entry: dict[str, Any], bar: Any) -> None:
        nonlocal ok
        done[entry["record"]["example_id"]] = entry
        ok += entry["status"] == "ok"
        bar.set_postfix(parsed=ok, failed=len(done) - ok, refresh=False)  # the bar redraws at its own pace

    if todo:
        with ExitStack() as files:
            logs = {path: files.enter_context(JsonlAppender(path)) for path in {path for _, path in todo}}
            client.gather([_generate_one(client, p, version, config, fps[p.example_id], logs[path],
                                         repeats[p.example_id]) for p, path in todo],
                          desc=desc, on_done=finished, initial=total - len(todo))
    out = {}
    for name, (plans, _) in splits.items():
        entries = [done[p.example_id] for p in plans]
        out[name] = ([e["record"] for e in entries if e["status"] == "ok"],
                     [e["record"] for e in entries if e["status"] == "failed"])
    return out


def generate_split(client: Any, plans: list[ExamplePlan], version: Flow, config: GenerateConfig,
                   progress_path: str | Path, desc: str = "examples") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One split: (examples, failures). See `generate_splits`."""
    return generate_splits(client, {"split": (plans, Path(progress_path))}, version, config, desc)["split"]


# ---------------------------------------------------------------- the whole stage
@dataclass
class GenerationOutcome:
    """Everything stage 2 produced, with the counts the notebook records and plots."""

    config: GenerateConfig
    train_plans: list[ExamplePlan]
    heldout_plans: list[ExamplePlan]
    train: list[dict[str, Any]] = field(default_factory=list)
    heldout: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    train_filter: FilterOutcome = field(default_factory=FilterOutcome)
    heldout_filter: FilterOutcome = field(default_factory=FilterOutcome)
    shirkers: ShirkerStats = field(default_factory=ShirkerStats)
    paths: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, Any] = field(default_factory=dict)  # where the prompts came from (source, file, commit)
    prompt_fingerprint: str = ""  # of every text the flow sends (Flow.fingerprint)
    resume: dict[str, int] = field(default_factory=dict)  # {"resumed": finished earlier, "retried": failed earlier}

    @property
    def filtered(self) -> dict[str, int]:
        return {r: self.train_filter.counts[r] + self.heldout_filter.counts[r] for r in FILTER_REASONS}

    @property
    def heldout_collisions(self) -> int:
        train_ids = {p.example_id for p in self.train_plans}
        return sum(1 for items in self.heldout_filter.dropped.values() for ex in items
                   if ex.get("duplicate_of") in train_ids)

    def failure_reasons(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for f in self.failed:
            counts[(f.get("reasons") or ["unknown"])[-1]] += 1
        return dict(counts)

    def summary(self) -> dict[str, Any]:
        all_examples = self.train + self.heldout + [ex for o in (self.train_filter, self.heldout_filter)
                                                    for items in o.dropped.values() for ex in items]
        return {
            "num_planned": len(self.train_plans),
            "num_heldout_planned": len(self.heldout_plans),
            "num_examples": len(self.train),
            "num_heldout": len(self.heldout),
            "num_failed": len(self.failed),
            "num_resumed": self.resume.get("resumed", 0),
            "num_retried_failed": self.resume.get("retried", 0),
            "num_failed_train": sum(f["split"] == "train" for f in self.failed),
            "num_failed_heldout": sum(f["split"] == "heldout" for f in self.failed),
            "failure_reasons": self.failure_reasons(),
            "num_filtered": self.filtered,
            "num_heldout_collisions": self.heldout_collisions,
            "num_shirkers": sum(1 for ex in self.train if ex.get("shirker")),
            "num_shirker_failed": len(self.shirkers.failed),
            "repeated_skill_pairs": pair_report(self.train_plans, self.heldout_plans),
            "attempts_histogram": dict(Counter(str(ex["attempt"]) for ex in all_examples)),
            "input_tokens": sum(ex.get("input_tokens", 0) for ex in all_examples) + sum(f["input_tokens"] for f in self.failed),
            "output_tokens": sum(ex.get("output_tokens", 0) for ex in all_examples) + sum(f["output_tokens"] for f in self.failed),
        }

    def require_usable(self) -> None:
        """Fail loudly here rather than let stage 3 train on nothing."""
        if not self.train:
            reasons = ", ".join(f"{k}: {v}" for k, v in self.failure_reasons().items()) or "none recorded"
            calls = [r for r in self.failure_reasons() if r.startswith("call failed")]
            if calls and len(calls) == len(self.failure_reasons()):  # no reply came back: not the teacher's fault
                raise GenerationError(
                    f"no usable training example: every teacher call failed ({reasons}). Fix what the error says: "
                    "check TEACHER_BASE_URL, TEACHER_MODEL and TEACHER_API_KEY_ENV (is the server up, does it serve "
                    "that id?), or, for an in-process teacher, that `make setup` installed its packages.")
            raise GenerationError(
                f"no usable training example: {len(self.failed)} failed to parse ({reasons}), "
                f"{sum(self.train_filter.counts.values())} were filtered out. Look at RUN_DIR/data/failed.jsonl, then "
                "raise MAX_ATTEMPTS or NUM_EXAMPLES, relax MIN_INSTRUCTION_WORDS / DROP_TRUNCATED, raise GENERATE_MAX_TOKENS, "
                "or use a stronger TEACHER_MODEL (an OpenAI-compatible endpoint via TEACHER_BASE_URL)."
            )


def run_generation(config: GenerateConfig, client: Any, data_dir: str | Path | None = None) -> GenerationOutcome:
    """Run stage 2 and write every artifact under `data_dir` (default RUN_DIR/data). Does not raise when nothing
    parsed: call `outcome.require_usable()` after recording the counts."""
    with frozen_heap():  # the stage's own objects are all a full garbage collection walks (see llm/loopgc.py)
        return _run_generation(config, client, data_dir)


def _run_generation(config: GenerateConfig, client: Any, data_dir: str | Path | None) -> GenerationOutcome:
    data_dir = Path(data_dir) if data_dir else Path(config.run_dir) / layout.DATA
    data_dir.mkdir(parents=True, exist_ok=True)
    version = load_flow(config)
    skills, query_types = load_stage1_inputs(config)
    train_plans, heldout_plans = make_plans(config, skills, query_types)
    out = GenerationOutcome(config, train_plans, heldout_plans)
    out.prompts, out.prompt_fingerprint = version.describe(), version.fingerprint()
    out.prompts["input_files"] = input_files(config)[2]
    start_loading_datasets()

    results = generate_splits(client, {"train": (train_plans, data_dir / layout.progress_file("train")),
                                       "heldout": (heldout_plans, data_dir / layout.progress_file("heldout"))},
                              version, config, desc="train + held-out examples", resume=out.resume)
    (train, train_failed), (heldout, heldout_failed) = results["train"], results["heldout"]
    out.failed = train_failed + heldout_failed
    filter_args = dict(min_words=config.min_instruction_words, max_words=config.max_instruction_words,
                       drop_truncated=config.drop_truncated, dedup_threshold=config.instruction_dedup_threshold)
    out.train_filter = filter_examples(train, **filter_args)
    # The held-out set must never share an instruction with the training set: collisions leave the held-out set.
    out.heldout_filter = filter_examples(heldout, against=out.train_filter.kept, **filter_args)
    out.train, out.shirkers = make_shirkers(
        client, out.train_filter.kept, fraction=config.shirker_fraction, kind=config.shirker_kind, seed=config.seed,
        max_attempts=config.max_attempts, **version.shirker_rules(out.train_filter.kept, config.shirker_fraction),
        **sampling_for(config, version, client),
    ) if config.shirker_fraction > 0 else ([dict(ex, shirker=None) for ex in out.train_filter.kept], ShirkerStats())
    out.heldout = [dict(ex, shirker=None) for ex in out.heldout_filter.kept]
    out.paths = save_outputs(data_dir, out)
    return out


def save_outputs(data_dir: Path, out: GenerationOutcome) -> dict[str, str]:
    """The run-folder contract: JSONL, official JSON lists, `datasets` folders, plus failures and filtered examples.
    They replace the previous run's together (see helpers/swap.py): never a new heldout.jsonl beside an old
    heldout_hf."""
    def write(staging: Path) -> dict[str, Path]:
        return {
            "train": write_jsonl(staging / layout.TRAIN_FILE, out.train),
            "heldout": write_jsonl(staging / layout.HELDOUT_FILE, out.heldout),
            "train_official": save_official_json(staging / layout.TRAIN_OFFICIAL_FILE, out.train),
            "heldout_official": save_official_json(staging / layout.HELDOUT_OFFICIAL_FILE, out.heldout),
            "train_hf": save_hf_dataset(staging / layout.TRAIN_HF_FOLDER, out.train),
            "heldout_hf": save_hf_dataset(staging / layout.HELDOUT_HF_FOLDER, out.heldout),
            "failed": write_jsonl(staging / layout.FAILED_FILE, out.failed),
            "filtered": write_jsonl(staging / layout.FILTERED_FILE,
                                    [ex for o in (out.train_filter, out.heldout_filter)
                                     for items in o.dropped.values() for ex in items]),
        }

    return {k: str(v) for k, v in replace_together(data_dir, write).items()}


def record_outcome(run: Any, outcome: GenerationOutcome) -> dict[str, Any]:
    """Store the counts in results.json / the notebook output and the artifact paths in the manifest."""
    summary = outcome.summary()
    for name, value in summary.items():
        run.record(name, value)
    notes = []
    if summary["num_retried_failed"]:
        notes.append(f"stage 2 tried again {summary['num_retried_failed']} example(s) that failed in an earlier run")
    if summary["num_failed"]:
        notes.append(f"stage 2: {summary['num_failed']} example(s) failed (see data/failed.jsonl); a re-run tries "
                     "them again")
    run.set_stage_info("notes", notes)
    run.set_stage_info("artifacts", outcome.paths)
    run.set_stage_info("prompts", outcome.prompts)
    run.set_stage_info("heldout_seed", heldout_seed(outcome.config.seed))
    run.set_stage_info("prompt_fingerprint", outcome.prompt_fingerprint)
    return summary


