"""Where an in-process model runs, in which precision, with how many CPU threads, and how many rows a batch holds.

One set of rules for every in-process model (teacher, judge, student, base; stage 3's and stage 4's answers):

- **Device**: CUDA when torch sees a GPU, else Intel XPU, else Apple MPS, else the CPU.
- **Precision** (`LOCAL_DTYPE`): 'auto' is the fastest precision the device computes natively. On a GPU that is
  bfloat16 (the paper's models are trained and evaluated in it; float16 where the GPU has no bf16). On a CPU with
  bf16 instructions (AMX or AVX512-BF16, as torch reports them: `cpu_has_native_bf16`) it is bfloat16 too: both
  embedded models decode about twice as fast in it at the CPU batch (benchmarks/bench_dtype.py); on other CPUs bf16
  is emulated and slower, so 'auto' stays float32 there. Replies in bf16 differ from float32's and are cached under
  their own key. 'float32' and 'bfloat16' keep their meaning everywhere.
- **Threads**: torch's default is one thread per core, which several processes sharing the cores (a vLLM server
  beside the kit, parallel runs, a busy machine) oversubscribe: each token then waits for threads that are not
  running. Unless OMP_NUM_THREADS says otherwise, the kit takes the cores this process may use minus the ones other
  processes keep busy when the first model loads (runnable tasks, sampled), at least one. The choice changes speed,
  not answers: float32 CPU inference gave bit-identical logits with 1 and 2 threads.
- **Batch**: 16 rows on a CPU, 64 on an accelerator (a GPU is far from busy at 16). A decoding step of the small
  embedded models on a 2-core CPU took about as long with 16 rows as with 8 or 4 (reading the weights, not the
  arithmetic, sets its pace: SmolLM2 2.1 steps/s at 8 and at 16 rows; Gemma 3 270M 0.35 / 0.31 / 0.26 / 0.28
  steps/s at 4 / 8 / 12 / 16 rows on a busy machine), so 12 requests in one batch take about 63 % (Gemma) or 50 %
  (SmolLM2) of the time of a batch of 8 and then one of 4.

Everything is looked up through `torch` at call time, so tests can stand in a fake GPU by monkeypatching
`torch.cuda.is_available` and friends.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Any

from ..params import ParameterError

ACCELERATORS = ("cuda", "xpu", "mps")
CPU_BATCH_SIZE = 16
ACCELERATOR_BATCH_SIZE = 64
THREADS_ENV = "OMP_NUM_THREADS"


def best_device() -> str:
    """'cuda', 'xpu', 'mps' or 'cpu': the first one this torch build can use."""
    import torch  # heavy: only processes that run a model in-process pay for importing it

    if torch.cuda.is_available():
        return "cuda"
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return "xpu"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def is_accelerator(device: str) -> bool:
    return device.split(":")[0] in ACCELERATORS


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX tiles or AVX512-BF16), as torch's CPU dispatch sees it.
    Without them torch emulates bf16 by converting to float32, which is slower than float32 itself; a torch build
    that cannot tell (no such check) counts as not having them."""
    import torch  # heavy: see above

    cpu = getattr(torch, "cpu", None)
    for check in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        probe = getattr(cpu, check, None)
        try:
            if probe is not None and probe():
                return True
        except RuntimeError:  # a build whose CPU dispatch cannot answer
            continue
    return False


def resolve_dtype(dtype: str, device: str, parameter: str = "LOCAL_DTYPE") -> str:
    """The precision a model is loaded in: 'auto' becomes bfloat16 on an accelerator (float16 on a GPU without bf16)
    and on a CPU with native bf16 (`cpu_has_native_bf16`), float32 on other CPUs; explicit values stay."""
    if dtype not in ("auto", "float32", "bfloat16"):
        raise ParameterError(parameter, f"unknown dtype {dtype!r}", "use 'auto', 'float32' or 'bfloat16'")
    if dtype != "auto":
        return dtype
    if not is_accelerator(device):
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    if device.startswith("cuda"):
        import torch  # heavy: see above

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if device.startswith("xpu") else "float16"  # MPS: float16 is the precision it supports widely


def batch_size_for(device: str) -> int:
    """Rows per `generate` call of an in-process model on `device`."""
    return ACCELERATOR_BATCH_SIZE if is_accelerator(device) else CPU_BATCH_SIZE


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_cores(samples: int = 5, interval_s: float = 0.05) -> float:
    """Cores other processes keep busy right now: the median count of runnable tasks (Linux's /proc/loadavg) less
    this one. Not the load average, which still counts a previous stage's work for a minute after it ended."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as fh:
                counts.append(int(fh.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            break
        if i < samples - 1:
            time.sleep(interval_s)
    if counts:
        return float(statistics.median(counts))
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # not available on this platform
        return 0.0


def cpu_threads(cores: int | None = None, busy: float | None = None) -> int:
    """Threads for CPU inference: OMP_NUM_THREADS when set, else the usable cores minus those other processes keep
    busy (`busy_cores`, rounded down), at least 1."""
    explicit = os.environ.get(THREADS_ENV, "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    cores = cores if cores is not None else _usable_cores()
    busy = busy_cores() if busy is None else busy
    return max(1, min(cores, cores - int(busy)))


_CHOSEN_THREADS: dict[str, int] = {}


def apply_cpu_threads() -> int:
    """Set torch's intra-op threads once per process (chosen by `cpu_threads`) and return the number in use; later
    calls keep the first choice, so one process never switches between thread counts mid-run."""
    import torch  # heavy: see above

    if "threads" not in _CHOSEN_THREADS:
        _CHOSEN_THREADS["threads"] = cpu_threads()
        torch.set_num_threads(_CHOSEN_THREADS["threads"])
    return torch.get_num_threads()


def place(model: Any, device: str) -> Any:
    """The model moved to `device` (in eval mode); on a CPU the thread count is chosen first."""
    if not is_accelerator(device):
        apply_cpu_threads()
        return model.eval()
    return model.to(device).eval()


def release_accelerator_memory() -> None:
    """Return the memory of freed tensors to the GPU driver, so another process (training, a vLLM server) can use
    it; callers drop their references to the model first."""
    import gc

    gc.collect()
    import torch  # heavy: see above

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        xpu.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def describe_placement(device: str, dtype: str) -> dict[str, Any]:
    """What the manifest records about where an in-process model runs."""
    info: dict[str, Any] = {"device": device, "dtype": dtype}
    if not is_accelerator(device):
        info["threads"] = apply_cpu_threads()
    return info
