"""The README a newcomer reads: short, every link resolving, its first-run commands working
as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) < 250


@pytest.mark.parametrize("page", [README, *DOCS, REPO / "CHANGELOG.md"], ids=lambda p: p.name)
def test_every_link_resolves(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{page.name}: {target}"


def test_the_first_run_commands_work_as_written(mirror: Path, tmp_path: Path) -> None:
    """Each command of "Your first table in five minutes", run in a fresh folder (the
    ``.venv/bin/`` of the commands is this interpreter's; ``make setup`` is what runs them)."""
    block = re.search(r"```sh\n(.*?)```", _section(README.read_text(), "Your first table"), re.S)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert commands[0] == "make setup"
    for command in commands[1:]:
        argv = shlex.split(command)
        assert argv[0] == ".venv/bin/dipbench", command
        argv = [sys.executable, "-m", "benchmark", *argv[1:]]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    table = (tmp_path / "runs" / "ci" / "inpainting-table1" / "table.md").read_text()
    assert "*DIP (paper)*" in table and "| DIP (last) |" in table
