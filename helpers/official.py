"""Official artefacts (the paper's prompts, FastChat's and WildBench's judge texts) read at run time.

The kit reproduces the paper's numbers only with the owners' own texts, and those texts are not the kit's to copy.
So they are read from a local clone the user names (`INSTRUCT_SKILLMIX_REPO`, `FASTCHAT_REPO`, `WILDBENCH_REPO`)
or, when that parameter is empty, downloaded once at a pinned commit into the kit's cache and checked by sha256.
A clone's file is checked against the same sha256: one that differs stops the run, unless
`ISM_ALLOW_UNPINNED_OFFICIAL=1` says the other text is meant.
Every resolved file says where it came from, so the manifest and each recorded number can name its source.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from .params import ParameterError, make_writable_folder


@dataclass(frozen=True)
class OfficialSource:
    """A repository whose files the kit reads, and the parameter that names a local clone of it."""

    key: str
    parameter: str
    repository: str
    commit: str


SOURCES: dict[str, OfficialSource] = {
    s.key: s
    for s in (
        OfficialSource("instruct_skillmix", "INSTRUCT_SKILLMIX_REPO", "princeton-pli/Instruct-SkillMix",
                       "ad331de2da9dda650a4dbf14d6cc7d8969d79dd9"),
        OfficialSource("fastchat", "FASTCHAT_REPO", "lm-sys/FastChat", "0e6d3e4beaab66f4d3f93db72541a4abab8af28d"),
        OfficialSource("wildbench", "WILDBENCH_REPO", "allenai/WildBench", "d6b8dcaf377d173d031980f97c16e1a82618c03d"),
        OfficialSource("alpaca_eval", "ALPACA_EVAL_REPO", "tatsu-lab/alpaca_eval",
                       "cd543a149df89434d8a54582c0151c0b945c3d20"),
    )
}

# sha256 of each file at its source's pinned commit: a download is accepted only when it matches.
PINNED_SHA256: dict[tuple[str, str], str] = {
    ("instruct_skillmix", "src/data_generation/prompts/generate_gpt-4-turbo-2024-04-09.json"):
        "01de592e6d0a1f7eaeac4d7c74a0b0f08cbbd675604e66460e9e00b02003dfbf",
    ("instruct_skillmix", "src/data_generation/prompts/generate_gpt-4-turbo-2024-04-09_brevity.json"):
        "0b31e067da1ab62214820b99e62f071e9f7506ab110a26decbab5107334627a5",
    ("instruct_skillmix", "src/data_generation/prompts/generate_gpt-4-turbo-2024-04-09_junk.json"):
        "99e66f4c1b135b9e687a0f1aaafcf479e917d754de0a9a14e1dfe5fa73add080",
    ("instruct_skillmix", "src/data_generation/prompts/generate_claude-3-5-sonnet-20240620.json"):
        "e4fb784e9f0d2eea0654185038a9c4788744622fce49ac1b395f1526d9b068f3",
    ("instruct_skillmix", "datasets/gpt-4-turbo-2024-04-09/skills.txt"):
        "913e34d77d8d18742a5665af4e9b0c31e9c2feb0e23c966b4ab72c6fe0942467",
    ("instruct_skillmix", "datasets/gpt-4-turbo-2024-04-09/queries.txt"):
        "0dd1243655bfe5619d99160c9f83debef6b117aa026d6b7796258b2b0fc64a43",
    ("instruct_skillmix", "datasets/claude-3-5-sonnet-20240620/skills.txt"):
        "406d5724736ae75674fa681a262bae9bb035d1e28bf1b807a121a01a9b37380f",
    ("instruct_skillmix", "datasets/claude-3-5-sonnet-20240620/queries.txt"):
        "c440cb353f4209e071ef3c97430e8ef6ac85590ab1b2862b2d272b024f2a6bee",
    # The FastChat copy the official generation ran with: the system message of each teacher's template.
    ("instruct_skillmix", "FastChat/fastchat/conversation.py"):
        "4e0fd2cdff98d509ac68209e3271fcb7f30ede587758d8b4cf627b8b749b1d0c",
    ("instruct_skillmix", "src/eval_configs/templates/prompt.txt"):
        "35101bc36d10997c7d926d8f21f7d173aec6523f3a57d78821b944a89925cdca",
    ("fastchat", "fastchat/llm_judge/data/judge_prompts.jsonl"):
        "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6",
    ("fastchat", "fastchat/llm_judge/data/mt_bench/question.jsonl"):
        "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
    ("fastchat", "fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl"):
        "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f",
    ("wildbench", "evaluation/eval_template.score.v2.md"):
        "c5984ae77b009f8dad0e8e37093348345f4e8d3099ce812bd7799ef7b73f005f",
    ("wildbench", "evaluation/eval_template.pairwise.v2.md"):
        "ccd57bd8c4c73f4f83cf8963ef3c2697c1c7b9e907ead91e0d0512cca4ae7a11",
    # The paper's model's published AlpacaEval 2.0 answers (stage 4's calibration row).
    ("alpaca_eval", "results/Llama-3-8B-Instruct-SkillMix/model_outputs.json"):
        "7d7288623791519ffe158fff25187a52bdba77059a947df5f7705dae372d0588",
}

# Where pinned files are fetched from; `ISM_OFFICIAL_URL` may point at a mirror with the same layout.
DEFAULT_URL_TEMPLATE = "https://raw.githubusercontent.com/{repository}/{commit}/{path}"
DOWNLOAD_TIMEOUT_S = 30.0
# A local clone's file that differs from the pinned one is refused unless this environment variable is 1.
ALLOW_UNPINNED_ENV = "ISM_ALLOW_UNPINNED_OFFICIAL"


@dataclass(frozen=True)
class OfficialFile:
    """A resolved official file: its local path and where it came from (for the manifest and the records)."""

    source: str
    path: str
    local_path: Path
    repository: str
    commit: str
    origin: str  # "local clone" or "pinned download"
    sha256: str

    def read_text(self) -> str:
        return self.local_path.read_text(encoding="utf-8")

    @property
    def matches_pin(self) -> bool | None:
        """Whether the bytes are those of the pinned commit (None: the kit pins no checksum for this file)."""
        pinned = PINNED_SHA256.get((self.source, self.path))
        return None if pinned is None else pinned == self.sha256

    def describe(self) -> dict[str, object]:
        return {"repository": self.repository, "path": self.path, "commit": self.commit, "origin": self.origin,
                "sha256": self.sha256, "matches_pin": self.matches_pin}


def cache_root() -> Path:
    base = os.environ.get("ISM_CACHE_DIR") or Path.home() / ".cache" / "instruct-skillmix"
    return Path(base).expanduser() / "official"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source(key: str) -> OfficialSource:
    try:
        return SOURCES[key]
    except KeyError:
        raise ValueError(f"unknown official source {key!r}; known: {', '.join(SOURCES)}") from None


def _clone_commit(root: Path) -> str:
    """The commit a local clone is at, or a plain description when it is not a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def resolve(source: str, path: str, local_repo: str | Path = "") -> OfficialFile:
    """Return an official file from `local_repo` (the root of a clone) or from a checked, cached download.

    Fails with a ParameterError naming the source's parameter (e.g. INSTRUCT_SKILLMIX_REPO) when the file cannot
    be had, so a notebook stops before any model call.
    """
    src = _source(source)
    if local_repo:
        root = Path(local_repo).expanduser()
        if not root.is_dir():
            raise ParameterError(src.parameter, f"{str(local_repo)!r} is not a folder",
                                 f"set {src.parameter} to the root of a clone of {src.repository}, or leave it "
                                 "empty to download the pinned files")
        local = root / path
        if not local.is_file():
            raise ParameterError(src.parameter, f"{path} is not in {root}",
                                 f"point {src.parameter} at the ROOT of a clone of {src.repository} "
                                 f"(the file is expected at <root>/{path})")
        found = OfficialFile(source, path, local, src.repository, _clone_commit(root), "local clone",
                             sha256_of(local))
        _check_pin(found, src)
        return found
    return _download(src, path)


def _check_pin(found: OfficialFile, src: OfficialSource) -> None:
    """A clone's file whose bytes are not the pinned commit's (edited, another commit, or planted) would run the
    paper's procedure with someone else's text: it stops the run unless the user says it is meant."""
    if found.matches_pin is not False:
        return
    pinned = PINNED_SHA256[(found.source, found.path)]
    what = (f"{found.local_path} has sha256 {found.sha256}, not {pinned} (the file {found.path} at "
            f"{src.repository} {src.commit[:7]})")
    if os.environ.get(ALLOW_UNPINNED_ENV, "").strip().lower() in ("1", "true", "yes"):
        warnings.warn(f"{what}; used anyway because {ALLOW_UNPINNED_ENV} is set (the manifest records "
                      "matches_pin: false)", stacklevel=3)
        return
    raise ParameterError(src.parameter, what,
                         f"check out {src.commit[:7]} in that clone (or restore the file), or set "
                         f"{ALLOW_UNPINNED_ENV}=1 to use this text on purpose (recorded as matches_pin: false)")


def _download(src: OfficialSource, path: str) -> OfficialFile:
    pinned = PINNED_SHA256.get((src.key, path))
    if pinned is None:
        raise ParameterError(src.parameter, f"{path} has no pinned checksum, so the kit will not download it",
                             f"clone {src.repository} and set {src.parameter} to its folder")
    target = cache_root() / src.key / src.commit / path
    if target.is_file() and sha256_of(target) == pinned:
        return OfficialFile(src.key, path, target, src.repository, src.commit, "pinned download", pinned)
    template = os.environ.get("ISM_OFFICIAL_URL") or DEFAULT_URL_TEMPLATE
    url = template.format(repository=src.repository, commit=src.commit, path=path)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as reply:  # noqa: S310 (fixed https template)
            data = reply.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ParameterError(
            src.parameter, f"could not download {path} of {src.repository} at {src.commit[:7]} ({exc})",
            f"clone {src.repository} (git checkout {src.commit[:7]}) and set {src.parameter} to its folder, "
            "or run where the download is reachable") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != pinned:
        raise ParameterError(
            src.parameter, f"the download of {path} has sha256 {digest[:12]}…, not the pinned {pinned[:12]}…",
            f"check the network path or mirror (ISM_OFFICIAL_URL), or clone {src.repository} and set "
            f"{src.parameter} to its folder")
    make_writable_folder(target.parent, "ISM_CACHE_DIR", "set ISM_CACHE_DIR to a folder you can write")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(target)
    return OfficialFile(src.key, path, target, src.repository, src.commit, "pinned download", digest)
