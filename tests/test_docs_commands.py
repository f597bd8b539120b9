"""Every command the README and docs/ show works as written: each ``dipbench`` line of their
shell blocks parses with the command line's own parser and names suites that exist, the
read-only ones run, and each ``make`` target shown is one of the Makefile's.

The long commands (``reproduce``, a full ``run``, ``download --all``) are parsed here, not run:
their work is what the suites' tests and ``make test``'s regression check run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.cli.parser import build_parser
from benchmark.suites import packaged_suites

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Commands that only read, and answer in seconds: run literally.
READ_ONLY = ("list", "datasets", "methods")


def _shell_lines() -> list[tuple[str, str]]:
    """``(page, command)`` for every line of every ```sh block, comments dropped."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                command = line.split(" #")[0].strip()
                if command:
                    found.append((page.name, command))
    return found


def _dipbench_argv(command: str) -> tuple[dict[str, str], list[str]] | None:
    """The environment assignments and the arguments after ``dipbench``, or None."""
    words = shlex.split(command)
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if not words or Path(words[0]).name != "dipbench":
        return None
    return env, words[1:]


DIPBENCH = [(page, c) for page, c in _shell_lines() if _dipbench_argv(c) is not None]
MAKE = [(page, c) for page, c in _shell_lines() if c.startswith("make ")]


def test_the_pages_show_commands() -> None:
    # A change of fence or prefix that hid every command from these tests would fail here.
    assert len(DIPBENCH) >= 15 and len(MAKE) >= 3


@pytest.mark.parametrize(("page", "command"), DIPBENCH, ids=[c for _, c in DIPBENCH])
def test_every_dipbench_command_shown_parses(page: str, command: str) -> None:
    _, argv = _dipbench_argv(command)  # type: ignore[misc]
    if not torch.cuda.is_available():  # the parser refuses a device that is not here
        argv = ["cpu" if word == "cuda" else word for word in argv]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        pytest.fail(f"{page}: `{command}` is refused by the parser (exit {stop.code})")
    for suite in getattr(args, "suites", None) or []:
        assert suite.endswith(".toml") or suite in packaged_suites(), f"{page}: {suite}"


@pytest.mark.parametrize(
    ("page", "command"),
    [(p, c) for p, c in DIPBENCH if _dipbench_argv(c)[1][0] in READ_ONLY],  # type: ignore[index]
    ids=lambda value: value,
)
def test_the_read_only_commands_shown_run(page: str, command: str, mirror: Path) -> None:
    env, argv = _dipbench_argv(command)  # type: ignore[misc]
    environment = {**os.environ, **env, "DIPBENCH_MIRROR": str(mirror)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmark", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=REPO,
    )
    assert done.returncode == 0, f"{page}: {command}\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip()


@pytest.mark.parametrize(("page", "command"), MAKE, ids=[c for _, c in MAKE])
def test_every_make_target_shown_exists(page: str, command: str) -> None:
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))
    target = next(word for word in shlex.split(command)[1:] if "=" not in word)
    assert target in targets, f"{page}: `{command}`"
