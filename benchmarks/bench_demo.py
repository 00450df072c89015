"""`make demo` timed as a newcomer runs it after `make setup`: an empty call cache, the four stages, their phases.

    python benchmarks/bench_demo.py                        # writes benchmarks/demo_time.json (the figure docs quote)
    python benchmarks/bench_demo.py --keep-model-cache     # the model cache as it is (no set-up step timed)
    python benchmarks/bench_demo.py --out /tmp/d.json -p N_EVAL 4

It runs `python -m helpers run` (what `make demo` runs) in a child process, into a temporary run folder, with
ISM_CACHE_DIR at an empty folder, so every model call is made. Unless --keep-model-cache, ISM_MODEL_CACHE points at
an empty folder too and the embedded models are first materialised there from their GGUF files as `make setup`
does (`helpers.llm.models.materialise_all`), timed apart (`setup_materialise_s`). It then writes the date, the machine (cores, CPU model, memory, and the load average before and after: other work on the machine
inflates every figure), the commit, the total and per-stage seconds and each stage's phases from the run's
manifest (`helpers.phases`). README.md and docs/running.md quote the total of this file, and tests/test_docs.py
fails when they quote a time it does not hold: measure on a quiet machine, then update both.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from helpers.llm.models import MATERIALISE_COMMAND

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "demo_time.json"


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else what the platform module says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError):
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine() -> dict:
    return {"cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu_model": cpu_model(), "memory_gb": memory_gb(), "platform": platform.platform(),
            "python": platform.python_version()}


def commit() -> str | None:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return done.stdout.strip() + ("-dirty" if dirty else "")


def stage_figures(manifest: dict) -> dict:
    """Per notebook: its seconds and start-up (the driver's `_pipeline` entry) and its stage's phases and calls."""
    stages = manifest.get("stages", {})
    out = {}
    for notebook, seen in (stages.get("_pipeline") or {}).items():
        entry = {k: seen[k] for k in ("seconds", "startup_s") if k in seen}
        for name in seen.get("stages") or []:
            info = stages.get(name, {})
            entry.setdefault("timing", {})[name] = info.get("timing")
            entry.setdefault("calls", {}).update({role: {k: usage.get(k) for k in ("calls", "cache_hits",
                                                                                  "input_tokens", "output_tokens")}
                                                  for role, usage in (info.get("accounting") or {}).items()})
        out[notebook] = entry
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the figures (default: %(default)s)")
    ap.add_argument("--keep-model-cache", action="store_true",
                    help="use the usual model cache (materialised models are not counted) instead of an empty one")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter for the run (the figure is then not the demo's; it is recorded)")
    args = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    env = {**os.environ, "ISM_CACHE_DIR": str(scratch / "calls")}
    if not args.keep_model_cache:
        env["ISM_MODEL_CACHE"] = str(scratch / "models")
    run_dir = scratch / "run"
    command = [sys.executable, "-m", "helpers", "run", "--run-dir", str(run_dir)]
    for name, value in args.param:
        command += ["-p", name, value]
    load_before, started = load_average(), datetime.now(timezone.utc)
    try:
        materialise_s = None
        if not args.keep_model_cache:  # what `make setup` does, before the demo
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", MATERIALISE_COMMAND], cwd=ROOT, env=env, stdout=sys.stderr,
                           check=True)
            materialise_s = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=sys.stderr)  # stdout: the figures only
        total = time.perf_counter() - start
        manifest_path = run_dir / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if done.returncode != 0:
        print(f"the demo failed (exit {done.returncode}): no figure written", file=sys.stderr)
        return done.returncode
    figures = {
        "what": "make demo after make setup: the four stages on the embedded CPU models, empty call cache"
                + ("" if args.keep_model_cache else "; the models materialised beforehand as make setup does"),
        "command": "python -m helpers run --run-dir <empty folder>" + "".join(f" -p {n} {v}" for n, v in args.param),
        "params": dict(args.param),
        "date": started.date().isoformat(),
        "started": started.isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "versions": manifest.get("versions", {}),
        "empty_call_cache": True,
        "setup_materialise_s": materialise_s,
        "total_s": round(total, 1),
        "stages": stage_figures(manifest),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("date", "commit", "machine", "total_s")}
                     | {"stages_s": {nb: s.get("seconds") for nb, s in figures["stages"].items()},
                        "written": str(args.out)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
