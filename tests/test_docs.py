"""The README and docs/ stay true: every relative link resolves (files and section anchors), and every command they
show still parses as written against the kit's own command lines (`python -m helpers`, `helpers.sweep`,
`helpers.sft`, `make`), with parameters that exist and files that are there; the cheap ones are run."""
from __future__ import annotations

import argparse
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.__main__ import _select
from helpers.__main__ import main as helpers_main
from helpers.pipeline import parameter_table
from helpers.runs import PROJECT_ROOT
from helpers.sft.stage import main as sft_main
from helpers.sweep import PAPER_GRIDS
from helpers.sweep import main as sweep_main

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PREFIXES = ("python -m ", ".venv/bin/python -m ", "accelerate launch ", "make ")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a '#' line in a code block is no heading
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def _relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]


def test_docs_exist_and_the_readme_links_every_page():
    linked = {(PROJECT_ROOT / t.split("#")[0]).resolve() for t in _relative_links(PROJECT_ROOT / "README.md")}
    assert len(PAGES) > 1 and set(PAGES[1:]) <= linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(resolved), f"{page.name}: no section #{anchor} in {resolved.name}"


def _commands(page: Path) -> list[str]:
    """Commands as a reader would copy them: lines of code blocks (continuations joined, comments cut) and inline
    code that starts like a command. Synopses (`run | params`) and placeholders (`KEY=VALUE ...`) are not
    commands as written."""
    text = page.read_text()
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").split("\n"):
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line.startswith(PREFIXES):
                found.append(line)
    found += [span for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
              if span.startswith(PREFIXES) and " | " not in span and "..." not in span]
    return found


class _Parsed(Exception):
    """Raised instead of running a command once its arguments parsed."""


def _parse(main, argv: list[str], monkeypatch) -> argparse.Namespace:
    original = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
        try:
            main(argv)
        except _Parsed as parsed:
            return parsed.args[0]
        except SystemExit as exc:
            raise AssertionError(f"does not parse: {shlex.join(argv)}") from exc
    raise AssertionError(f"parsed nothing: {shlex.join(argv)}")


MAINS = {"helpers": helpers_main, "helpers.sweep": sweep_main, "helpers.sft": sft_main}


def _names_a_command(module: str, rest: list[str], monkeypatch) -> None:
    """A module and subcommand named without arguments exist: their `--help` works."""
    assert module in MAINS, f"python -m {module}: a command of an unknown module (add it to this test)"
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stdout", io.StringIO())  # the help text itself is not checked
        with pytest.raises(SystemExit) as done:
            MAINS[module]([*rest, "--help"])
    assert done.value.code == 0, f"python -m {module} {' '.join(rest)}: no such command"


def _check_files(argv: list[str]) -> None:
    """Every file of the kit a command names (a config, an accelerate config, a grid) is there."""
    for arg in argv:
        for value in arg.split("="):
            if value.startswith("configs/"):
                assert (PROJECT_ROOT / value).exists(), f"{value} does not exist"


def _check_command(command: str, monkeypatch, targets: set[str], parameters: set[str]) -> None:
    argv = shlex.split(command)
    if argv[0] == "make":
        assert {a for a in argv[1:] if "=" not in a} <= targets, f"{command}: no such make target"  # VAR=value: a variable
        return
    if argv[0] == "accelerate":
        if "-m" not in argv:  # prose about a launch option (`accelerate launch --num_processes 2`)
            return
        _check_files(argv)
        argv = ["python", *argv[argv.index("-m"):]]
    module, rest = argv[2], argv[3:]
    _check_files(rest)
    if not any(arg.startswith("-") for arg in rest):  # a command named in prose (`python -m helpers run`)
        _names_a_command(module, rest, monkeypatch)
        return
    if module == "helpers":
        args = _parse(helpers_main, rest, monkeypatch)
        unknown = {name for name, _ in (getattr(args, "param", None) or [])} - parameters
        assert not unknown, f"{command}: no notebook declares {unknown}"
        if args.cmd == "run":
            _select(args.only, args.start)  # --only / --from name notebooks that exist
    elif module == "helpers.sweep":
        args = _parse(sweep_main, rest, monkeypatch)
        if args.grid is None:  # --status and --collect-only read the sweep folder's grid.json
            assert args.status or args.collect_only, f"{command}: --grid is missing"
        else:
            assert args.grid in PAPER_GRIDS or (PROJECT_ROOT / args.grid).exists(), command
    elif module == "helpers.sft":
        args = _parse(sft_main, rest, monkeypatch)
        unknown = {item.split("=", 1)[0] for item in args.set} - parameters
        assert not unknown, f"{command}: no notebook declares {unknown}"
    else:
        raise AssertionError(f"{command}: a command of an unknown module (add it to this test)")


def test_every_documented_command_parses_as_written(monkeypatch):
    targets = set(re.findall(r"^([a-z][a-z-]*):", (PROJECT_ROOT / "Makefile").read_text(), re.M))
    parameters = {row["name"] for row in parameter_table()}
    checked = 0
    for page in PAGES:
        for command in _commands(page):
            if command.startswith(("python -m ", ".venv/bin/python -m ")) and command.split()[2].startswith(
                    ("helpers",)) or command.startswith(("make ", "accelerate launch ")):
                _check_command(command, monkeypatch, targets, parameters)
                checked += 1
    assert checked >= 15  # the pages do show commands; a change to how they are written must not skip them all


def test_the_cheap_commands_run_as_written():
    """`python -m helpers params` (every parameter) and the SFT stage's launch command for the paper profile."""
    shown = subprocess.run([sys.executable, "-m", "helpers", "params"], capture_output=True, text=True,
                           cwd=PROJECT_ROOT, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "NUM_EXAMPLES" in shown.stdout and "TEACHER_BASE_URL" in shown.stdout
    launch = subprocess.run([sys.executable, "-m", "helpers.sft", "--config", "configs/sft/paper.yaml", "--set",
                             "RUN_DIR=runs/paper", "--launch-command", "fsdp"],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert launch.returncode == 0, launch.stderr[-2000:]
    assert "accelerate launch --config_file configs/accelerate/fsdp.yaml" in launch.stdout
