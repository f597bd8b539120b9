"""Publishing is a trust boundary: a publish replaces only a report it published, never a run
folder or a user's folder, never writes outside ``--reports``, never silently shrinks a report or
swaps its methods, survives a kill at any point, and rebuilds its results with its tables."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from benchmark.cli import main
from benchmark.report import write_index
from benchmark.report.merge import KEPT
from benchmark.report.publish import recover
from benchmark.runfolder import PUBLISHED, Record

REPO = Path(__file__).resolve().parents[1]

SUITE = """
name = "tiny"
title = "A tiny suite"
task = "denoising"
protocol = "rgb"
datasets = "kodak24"
images = {images}
crop = 32

[[degradations]]
kind = "gaussian"
levels = [25]

{methods}
"""
DEAD_PID = 2**22 + 12345  # above Linux's pid_max: no such process


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def code_of(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def tiny_run(
    folder: Path,
    out: str = "runs/ci/tiny",
    images: str = '["kodim01", "kodim02"]',
    methods: str = "[methods.median]\n\n[methods.tv]",
    narrower: tuple[str, ...] = (),
) -> Path:
    suite = folder / f"tiny-{abs(hash((images, methods)))}.toml"
    suite.write_text(SUITE.format(images=images, methods=textwrap.dedent(methods)))
    assert main(["run", str(suite), "--profile", "ci", "--out", out, "-q", *narrower]) == 0
    return folder / out


def test_publish_onto_the_run_itself_is_refused(mirror: Path, here: Path) -> None:
    run = tiny_run(here)
    before = snapshot(run)
    assert code_of(["publish", str(run), "--reports", "runs"]) == 1
    assert snapshot(run) == before


def test_publish_over_another_run_folder_of_the_suite_is_refused(mirror: Path, here: Path) -> None:
    run = tiny_run(here)
    other = tiny_run(here, out="other/ci/tiny")
    (other / "NOTES.txt").write_text("mine")
    before = snapshot(other)
    assert code_of(["publish", str(run), "--reports", "other"]) == 1
    assert snapshot(other) == before


def test_a_run_never_writes_into_a_published_report(mirror: Path, here: Path) -> None:
    committed = here / "reports" / "quick" / "inpainting-table1"
    shutil.copytree(REPO / "reports" / "quick" / "inpainting-table1", committed)
    before = snapshot(committed)
    argv = ["run", "inpainting-table1", "--profile", "quick", "--images", "house"]
    assert code_of([*argv, "--methods", "telea", "--out", str(committed), "-q"]) == 2
    assert snapshot(committed) == before
    (committed / PUBLISHED).unlink()  # published before the marker: no cells, tables kept
    assert code_of([*argv, "--methods", "telea", "--out", str(committed), "-q"]) == 2


def test_names_from_suite_json_cannot_lead_outside_the_reports(mirror: Path, here: Path) -> None:
    run = tiny_run(here)
    manifest = json.loads((run / "suite.json").read_text())
    manifest["suite"] = "../../escaped"
    (run / "suite.json").write_text(json.dumps(manifest))
    assert code_of(["publish", str(run), "--reports", "reports"]) == 1
    assert not (here / "escaped").exists() and not (here / "reports").exists()


def test_a_publish_of_some_cells_adds_them_and_replace_replaces_the_report(
    mirror: Path, here: Path
) -> None:
    full = tiny_run(here)
    assert main(["publish", str(full), "--reports", "reports"]) == 0
    published = here / "reports" / "ci" / "tiny"
    one = tiny_run(here, out="runs/one/tiny", images='["kodim01"]')
    assert main(["publish", str(one), "--reports", "reports"]) == 0
    assert len(pd.read_csv(published / "results.csv")) == 4  # kodim01's replaced, kodim02's kept
    assert len(list((published / KEPT).glob("*.json"))) == 4
    assert main(["publish", str(one), "--reports", "reports", "--replace"]) == 0
    assert len(pd.read_csv(published / "results.csv")) == 2


def test_a_report_grown_by_two_publishes_equals_one_runs(mirror: Path, here: Path) -> None:
    assert main(["publish", str(tiny_run(here)), "--reports", "whole"]) == 0
    # in pieces, the second image and the second method first: the report's order is the
    # suite's grid order, not the publishes'
    for image, methods in (
        ("kodim02", ["median", "tv"]),
        ("kodim01", ["tv"]),
        ("kodim01", ["median"]),
    ):
        part = tiny_run(
            here,
            out=f"runs/{image}-{methods[0]}/tiny",
            narrower=("--images", image, "--methods", *methods),
        )
        manifest = json.loads((part / "suite.json").read_text())
        assert manifest["grid_images"] == ["kodak24/kodim01", "kodak24/kodim02"]
        assert manifest["grid_methods"] == ["median", "tv"]
        assert main(["publish", str(part), "--reports", "grown"]) == 0
        # a cell no part has run yet is empty, not "failed"
        assert "failed" not in (here / "grown" / "ci" / "tiny" / "table.md").read_text()
        if image == "kodim02":  # the index says how much of the grid the report holds
            index = (here / "grown" / "README.md").read_text()
            assert "kodak24 1 of 2; images per method: median 1, tv 1" in index
    whole, grown = here / "whole" / "ci" / "tiny", here / "grown" / "ci" / "tiny"
    timing = ["seconds"]  # the one column two runs of the same cells differ in
    assert_frame_equal(
        pd.read_csv(whole / "results.csv").drop(columns=timing),
        pd.read_csv(grown / "results.csv").drop(columns=timing),
    )
    texts = sorted(p.name for p in whole.iterdir() if p.suffix in (".md", ".csv", ".json"))
    assert texts == sorted(p.name for p in grown.iterdir() if p.suffix in (".md", ".csv", ".json"))
    for name in set(texts) - {"results.csv"}:
        assert (whole / name).read_text() == (grown / name).read_text(), name
    assert sorted(p.name for p in (whole / KEPT).iterdir()) == sorted(
        p.name for p in (grown / KEPT).iterdir()
    )


TINY_DIP = """
[methods.median]

[methods.dip]
preset = "denoising"
outputs = ["last"]
fit = { iterations = 8 }
network = { channels_down = 8, channels_up = 8, scales = 2 }
"""


def test_a_merge_of_classical_cells_keeps_the_networks_grid(mirror: Path, here: Path) -> None:
    """Pixels are not kept with a report's records: the grid a network's run drew stays
    through a merge of classical cells alone (a baseline added, the tables rendered again),
    and a network's run draws it anew."""

    def publish_run_of(*methods: str) -> None:
        out = f"runs/{'-'.join(methods)}/tiny"
        run = tiny_run(here, out, '["kodim01"]', TINY_DIP, narrower=("--methods", *methods))
        assert main(["publish", str(run), "--reports", "reports"]) == 0

    publish_run_of("median", "dip")
    grid = here / "reports" / "ci" / "tiny" / "grid.png"
    drawn = grid.read_bytes()
    publish_run_of("median")
    assert grid.read_bytes() == drawn
    publish_run_of("dip")
    assert grid.read_bytes() != drawn  # the dip run's own grid: its one method


@pytest.mark.parametrize("change", ["code", "versions"])
def test_a_merge_with_cells_of_other_code_or_versions_is_refused_naming_them(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture, change: str
) -> None:
    assert main(["publish", str(tiny_run(here)), "--reports", "reports"]) == 0
    published = here / "reports" / "ci" / "tiny"
    for path in (published / KEPT).glob("*.json"):  # kodim02's cells: as another checkout made them
        record = Record.read(path)
        assert record is not None
        if record.cell["image"] != "kodim02":
            continue
        if change == "code":
            record.code["files"] = {k: "0" * 16 for k in record.code["files"]}
        else:
            record.versions["numpy"] = "1.26.4"
        scratch = here / "scratch"
        record.write(scratch)  # a valid digest: the record is another code's, not an edited one
        shutil.copy2(scratch / "cells" / path.name, path)
    before = snapshot(published)
    one = tiny_run(here, out="runs/one/tiny", images='["kodim01"]')
    capsys.readouterr()
    assert code_of(["publish", str(one), "--reports", "reports"]) == 1
    err = capsys.readouterr().err
    assert "2 of its cells" in err and "kodim02 gaussian 25 median" in err
    assert ("numpy 1.26.4 (the run: " in err) == (change == "versions")
    assert snapshot(published) == before


def test_a_merge_of_cells_at_another_crop_is_refused(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["publish", str(tiny_run(here)), "--reports", "reports"]) == 0
    suite = here / "smaller" / "tiny.toml"
    suite.parent.mkdir()
    text = SUITE.format(images='["kodim01", "kodim02"]', methods="[methods.median]")
    suite.write_text(text.replace("crop = 32", "crop = 16"))
    argv = ["run", str(suite), "--profile", "ci", "--images", "kodim01", "--out", "runs/16"]
    assert main([*argv, "-q"]) == 0
    capsys.readouterr()
    assert code_of(["publish", "runs/16", "--reports", "reports"]) == 1
    assert "(crop 16) beside the report's (crop 32)" in capsys.readouterr().err


def test_a_report_that_keeps_no_records_is_not_shrunk_by_a_publish_of_some_cells(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["publish", str(tiny_run(here)), "--reports", "reports"]) == 0
    published = here / "reports" / "ci" / "tiny"
    shutil.rmtree(published / KEPT)  # published before reports kept their records
    before = snapshot(published)
    one = tiny_run(here, out="runs/one/tiny", images='["kodim01"]')
    capsys.readouterr()
    assert code_of(["publish", str(one), "--reports", "reports"]) == 1
    assert "would drop 2 of its 4 cells" in capsys.readouterr().err
    assert snapshot(published) == before


def test_a_suite_that_maps_a_method_elsewhere_cannot_publish_over_it(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["publish", str(tiny_run(here)), "--reports", "reports"]) == 0
    impostor = tiny_run(
        here, out="runs/x/tiny", methods='[methods.median]\nmethod = "tv"\n\n[methods.tv]'
    )
    capsys.readouterr()
    assert code_of(["publish", str(impostor), "--reports", "reports"]) == 1
    assert "replace its method 'median' (median) with another definition (tv)" in (
        capsys.readouterr().err
    )


def test_results_are_rebuilt_from_the_records_with_the_tables(mirror: Path, here: Path) -> None:
    run = tiny_run(here)
    (run / "results.csv").write_text("suite,psnr\nnot,these\n")  # a run's own file, broken
    assert main(["publish", str(run), "--reports", "reports"]) == 0
    published = here / "reports" / "ci" / "tiny"
    results = pd.read_csv(published / "results.csv")
    records = [json.loads(p.read_text()) for p in sorted((run / "cells").glob("*.json"))]
    psnrs = sorted(row["psnr"] for record in records for row in record["rows"])
    assert sorted(results.psnr) == psnrs
    assert (published / "provenance.json").is_file() and (published / PUBLISHED).is_file()


@pytest.mark.parametrize("killed", ["staging", "between-renames", "after-renames"])
def test_a_killed_publish_leaves_the_old_or_the_new_report(
    mirror: Path, here: Path, killed: str
) -> None:
    """The states a kill can leave (by the order of publish's steps), then the next publish's
    recovery and the index: a report is always there, and no leftover is listed."""
    assert main(["publish", str(tiny_run(here)), "--reports", "reports"]) == 0
    target = here / "reports" / "ci" / "tiny"
    old = snapshot(target)
    staged = target.with_name(f".tiny.publishing-{DEAD_PID}")
    retired = target.with_name(f".tiny.replaced-{DEAD_PID}")
    shutil.copytree(target, staged)
    (staged / "table.md").write_text("the new report")
    if killed == "staging":
        (staged / PUBLISHED).unlink()  # the marker is written last
    else:
        os.replace(target, retired)
        if killed == "after-renames":
            os.replace(staged, target)
    recover(target)
    assert target.is_dir() and not staged.exists() and not retired.exists()
    expected = "the new report" if killed != "staging" else old["table.md"].decode()
    assert (target / "table.md").read_text() == expected
    index = write_index(here / "reports").read_text()
    assert "publishing" not in index and "replaced" not in index


def test_the_index_lists_the_papers_protocols_first(mirror: Path, here: Path) -> None:
    assert main(["publish", str(tiny_run(here)), "--reports", "reports"]) == 0
    for profile in ("quick", "full"):
        copy = here / "reports" / profile / "tiny"
        shutil.copytree(here / "reports" / "ci" / "tiny", copy)
        manifest = json.loads((copy / "suite.json").read_text())
        (copy / "suite.json").write_text(json.dumps({**manifest, "profile": profile}))
    index = write_index(here / "reports").read_text()
    places = [index.index(f"## tiny ({profile})") for profile in ("full", "quick", "ci")]
    assert places == sorted(places)


# --- records are evidence --------------------------------------------------------------------


def test_an_edited_psnr_is_found_by_report_publish_check_and_run(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tiny_run(here)
    results = pd.read_csv(run / "results.csv")
    expected = here / "expected.csv"
    from benchmark import check

    check.derive_expected(results, {"seed-1": results}, {"test": "1"}).to_csv(expected)
    record = sorted((run / "cells").glob("*.json"))[0]
    content = json.loads(record.read_text())
    content["rows"][0]["psnr"] += 10.0
    record.write_text(json.dumps(content))
    capsys.readouterr()

    assert main(["report", str(run)]) == 0
    said = capsys.readouterr().err
    assert f"{record} is left out: its content changed after it was written" in said
    assert code_of(["publish", str(run), "--reports", "reports"]) == 1
    assert "1 record(s) left out" in capsys.readouterr().err and not (here / "reports").exists()
    assert code_of(["check", str(run), "--expected", str(expected)]) == 2
    assert "is not what its records say" in capsys.readouterr().err
    argv = ["run", str(sorted(here.glob("tiny-*.toml"))[0]), "--profile", "ci", "--out", str(run)]
    assert main([*argv, "-q"]) == 0  # the run recomputes that cell, saying why
    assert "changed after it was written: its cell is computed again" in capsys.readouterr().out
    assert code_of(["check", str(run), "--expected", str(expected)]) == 0


def test_a_record_filed_under_another_cells_key_is_not_taken(mirror: Path, here: Path) -> None:
    run = tiny_run(here)
    first, second = sorted((run / "cells").glob("*.json"))[:2]
    shutil.copy(first, second)  # the first cell's record where the second's was
    for suffix in (".png", ".npz"):
        if first.with_suffix(suffix).exists():
            shutil.copy(first.with_suffix(suffix), second.with_suffix(suffix))
    assert code_of(["publish", str(run), "--reports", "reports"]) == 1
    from benchmark.runfolder import Record, why_unusable

    assert Record.read(second) is None
    assert why_unusable(second).startswith(f"it is the record of cell {first.stem}")


def test_an_output_swapped_for_another_cells_is_named_and_refused(
    mirror: Path, here: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tiny_run(here)
    first, second = sorted((run / "cells").glob("*.png"))[:2]
    shutil.copy(first, second)  # a valid image, of another cell
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    assert f"{second} is not the file its run wrote" in capsys.readouterr().err
    assert code_of(["publish", str(run), "--reports", "reports"]) == 1
    assert "1 output file(s) not as their run wrote them" in capsys.readouterr().err
