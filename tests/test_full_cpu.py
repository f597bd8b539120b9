"""scripts/full_cpu.py, the papers' protocol in slices: its plan loads, and a slice whose cells
the published report holds from the current code is skipped, not run again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from benchmark.cli import main
from benchmark.report.merge import identity as record_identity
from benchmark.report.merge import kept_records


def test_every_slice_of_the_plan_is_cells_of_the_full_profile(
    script: Callable[[str], ModuleType],
) -> None:
    full_cpu = script("full_cpu")
    slices = full_cpu.read_plan(full_cpu.PLAN)
    assert len({s["name"] for s in slices}) == len(slices)
    for entry in slices:
        cells = full_cpu.cells_of(entry)
        assert cells and {c.profile for c in cells} == {"full"}, entry["name"]
        assert {c.method_key for c in cells} == set(entry["methods"]), entry["name"]


def test_a_published_slice_is_skipped_and_one_not_yet_published_is_planned(
    mirror: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    script: Callable[[str], ModuleType],
) -> None:
    full_cpu = script("full_cpu")
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[slice]]\nname = "telea-house"\nsuite = "inpainting-table1"\n'
        'images = ["house"]\nmethods = ["telea"]\n\n'
        '[[slice]]\nname = "telea-barbara"\nsuite = "inpainting-table1"\n'
        'images = ["barbara"]\nmethods = ["telea"]\n'
    )
    out, reports = tmp_path / "runs" / "telea-house", tmp_path / "reports"
    run = ["run", "inpainting-table1", "--profile", "full", "--images", "house"]
    assert main([*run, "--methods", "telea", "--out", str(out), "-q"]) == 0
    assert main(["publish", str(out), "--reports", str(reports)]) == 0
    kept = kept_records(reports / "full" / "inpainting-table1")
    assert kept is not None
    cells = full_cpu.cells_of(
        {"suite": "inpainting-table1", "images": ["house"], "methods": ["telea"]}
    )
    assert {full_cpu.identity(c) for c in cells} == {record_identity(r) for r in kept}
    capsys.readouterr()
    argv = ["--plan", str(plan), "--reports", str(reports), "--dry-run", "--threads", "1"]
    assert full_cpu.main(argv) == 0
    said = capsys.readouterr().out
    assert "telea-house: published" in said
    assert "telea-barbara: 1 cell(s)" in said and "barbara bernoulli 0.5 telea: about" in said
    # A slice of both images runs only the one not yet published.
    both = {"suite": "inpainting-table1", "images": ["house", "barbara"], "methods": ["telea"]}
    todo = [
        c
        for c in full_cpu.cells_of(both)
        if full_cpu.identity(c) not in full_cpu.published_cells(reports, "inpainting-table1")
    ]
    argv = full_cpu.run_arguments(both, todo, tmp_path / "out", 1)
    assert argv[argv.index("--images") + 1 : argv.index("--methods")] == ["barbara"]
