"""Reports from cell records: paper-layout tables, published rows, gaps, figures, CIFAR-10."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from benchmark import images, report
from benchmark.cli import main
from benchmark.report import PAPER_NUMBERS
from benchmark.runfolder import Manifest, Record
from benchmark.suites import packaged_suites

BROKEN = """
def broken(observation, *, seed=0, **options):
    raise RuntimeError("deliberately broken")
"""


@pytest.fixture(scope="module")
def table1_run(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    out = tmp_path_factory.mktemp("table1")
    argv = [
        "run",
        "inpainting-table1",
        "--profile",
        "ci",
        "--methods",
        "biharmonic",
        "telea",
        "--out",
        str(out),
        "-q",
        "--jobs",
        "1",
    ]
    assert main(argv) == 0
    return out


def test_tables_rebuild_from_the_cell_records_alone(table1_run: Path) -> None:
    for name in ("results.csv", "table.md", "table.csv", "paper_comparison.md", "grid.png"):
        (table1_run / name).unlink(missing_ok=True)
    assert main(["report", str(table1_run)]) == 0
    md = (table1_run / "table.md").read_text()
    assert "| method | house | peppers | mean |" in md
    assert "*Papyan et al. (paper)*" in md and "*DIP (paper)*" in md
    assert "| Biharmonic |" in md and "| Telea |" in md
    assert "ci profile: NOT the paper's protocol" in md
    assert (table1_run / "grid.png").is_file()


def test_published_rows_match_paper_numbers(table1_run: Path) -> None:
    table = pd.read_csv(table1_run / "table.csv")
    numbers = pd.read_csv(PAPER_NUMBERS)
    numbers = numbers[numbers.table == "Table 1"]
    for method, label in (("dip", "DIP (paper)"), ("papyan_csc", "Papyan et al. (paper)")):
        row = table[(table.method == label) & (table.metric == "psnr")].iloc[0]
        for image in ("house", "peppers"):
            expected = numbers[(numbers.method == method) & (numbers.image == image)].psnr.iloc[0]
            assert row[image] == pytest.approx(expected)
    ours = table[(table.method == "Biharmonic") & (table.metric == "psnr")].iloc[0]
    assert ours["mean"] == pytest.approx((ours["house"] + ours["peppers"]) / 2)


def test_a_failed_cell_still_reports_the_rest_and_marks_the_gap(
    tmp_path: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_methods.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = tmp_path / "gap.toml"
    suite.write_text(
        'name = "gap"\ntask = "inpainting"\nprotocol = "gray"\ndatasets = "bm3d_gray11"\n'
        'images = ["house", "peppers"]\ncrop = 40\n'
        '[[degradations]]\nkind = "bernoulli"\nlevels = [0.5]\n'
        '[methods.telea]\n[methods.broken]\nmethod = "broken_methods:broken"\n'
    )
    out = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(out), "-q", "--jobs", "1"]) == 1
    md = (out / "table.md").read_text()
    assert "**gaps:** 2 failed cell(s)" in md
    assert "| broken | failed | failed |" in md
    assert "| telea |" in md


def test_figures_open_as_images(table1_run: Path) -> None:
    main(["report", str(table1_run)])
    pictures = list(table1_run.glob("*.png"))
    assert pictures
    for picture in pictures:
        with Image.open(picture) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def test_a_report_writer_that_dies_midway_leaves_the_previous_files_whole(
    table1_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two runs sharing a folder both rewrite its report; a reader must never meet a
    # half-written file (CI once read a truncated grid.png written in place).
    main(["report", str(table1_run)])
    names = ("table.md", "table.csv", "paper_comparison.md", "grid.png")
    before = {name: (table1_run / name).read_bytes() for name in names}

    def die_halfway(self: Figure, target: object, **_: object) -> None:
        if isinstance(target, (str, Path)):
            Path(target).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", die_halfway)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(table1_run)
    for name in names:
        assert (table1_run / name).read_bytes() == before[name]
    assert not list(table1_run.glob(".*.tmp"))


def _official_format_archive(path: Path, count: int) -> np.ndarray:
    """A CIFAR-10-python archive with ``count`` test images, as the official one is laid out."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": list(range(count)),
        b"data": pixels.reshape(count, -1),
        b"filenames": [b"x.png"] * count,
    }
    payload = pickle.dumps(batch)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return pixels.transpose(0, 2, 3, 1)


def test_cifar10_suite_on_a_small_archive_in_the_official_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "cifar10").mkdir(parents=True)
    archive = mirror / "cifar10" / "cifar-10-python.tar.gz"
    pixels = _official_format_archive(archive, 4)
    registry = pd.read_csv(images.REGISTRY_PATH, dtype=str, keep_default_na=False)
    registry.loc[registry.set == "cifar10", "md5"] = hashlib.md5(archive.read_bytes()).hexdigest()
    registry.loc[registry.set == "cifar10", "bytes"] = str(archive.stat().st_size)
    registry_path = tmp_path / "registry.csv"
    registry.to_csv(registry_path, index=False)
    monkeypatch.setattr(images, "REGISTRY_PATH", registry_path)
    monkeypatch.setenv("DIPBENCH_MIRROR", str(mirror))
    monkeypatch.setenv("DIPBENCH_DATA", str(tmp_path / "cache"))

    loaded = images.load_image("cifar10", "test_00003")
    np.testing.assert_array_equal(loaded, pixels[3].astype(np.float32) / 255)
    out = tmp_path / "run"
    argv = [
        "run",
        "cifar10-noise",
        "--profile",
        "ci",
        "--methods",
        "median",
        "tv",
        "dd",
        "--out",
        str(out),
        "-q",
        "--executor",
        "inline",  # the registry patched above holds in this process only
    ]
    assert main(argv) == 0
    table = pd.read_csv(out / "results.csv")
    assert set(table.image) == {"test_00000", "test_00001"}
    assert set(table.degradation) == {"gaussian", "poisson", "salt_pepper", "speckle"}
    assert (table.status == "ok").all()


@pytest.mark.slow(seconds=32)
def test_reproduce_skips_a_suite_whose_images_are_unavailable(
    tmp_path: Path, mirror: Path, capsys: pytest.CaptureFixture
) -> None:
    tiny = tmp_path / "tiny.toml"  # a suite whose images are here, in seconds
    tiny.write_text(
        'name = "tiny"\ntitle = "Tiny"\ntask = "denoising"\nprotocol = "gray"\n'
        'datasets = "bm3d_gray11"\nimages = ["house"]\ncrop = 31\n'
        '[[degradations]]\nkind = "gaussian"\nlevels = [25]\n[methods.median]\n'
    )
    argv = ["reproduce", "cifar10-noise", str(tiny), "--profile", "ci"]
    assert main([*argv, "--out", str(tmp_path / "runs"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "skipped cifar10-noise: its images cannot be had here" in out
    assert (tmp_path / "runs" / "README.md").is_file()
    assert (tmp_path / "runs" / "ci" / "tiny" / "results.csv").is_file()
    # Nothing at all could run: that is a failure, not an empty success.
    assert main([*argv[:2], "--profile", "ci", "--out", str(tmp_path / "none"), "-q"]) == 1
    assert "no suite could run" in capsys.readouterr().err


def _synthetic_run(suite_name: str) -> tuple[dict, list[dict]]:
    """A packaged suite's full grid as records that all scored 30 dB (nothing is computed)."""
    from dataclasses import asdict

    from benchmark.suites import load_suite

    suite = load_suite(suite_name, "full")
    cells = suite.cells()
    meta = Manifest(
        suite=suite.name,
        profile=suite.profile,
        title=suite.title,
        datasets=list(suite.datasets),
        images=[f"{d}/{i}" for d, i in suite.images],
        paper=suite.paper,
        methods=[asdict(m) for m in suite.methods],
    )
    records = [
        Record(
            key=f"k{i}",
            cell=asdict(cell),
            status="ok",
            rows=[
                {"output": o, "oracle": o == "oracle", "psnr": 30.0, "ssim": 0.9}
                for o in (cell.outputs or ("out",))
            ],
        )
        for i, cell in enumerate(cells)
    ]
    return meta, records


@pytest.mark.parametrize("suite_name", packaged_suites())
def test_published_rows_pair_only_with_cells_of_their_own_level(
    suite_name: str, tmp_path: Path
) -> None:
    meta, records = _synthetic_run(suite_name)
    report.write_comparison(tmp_path, meta, records)
    grid = {(r.cell["dataset"], r.cell["degradation"], float(r.cell["level"])) for r in records}
    compare = (meta.paper or {}).get("compare", {})
    paper = report.published(meta)
    wanted = paper[paper.method.isin(list(compare))]
    table_path = tmp_path / "paper_comparison.csv"
    md = (tmp_path / "paper_comparison.md").read_text()
    if wanted.empty:
        assert not table_path.exists() or pd.read_csv(table_path).empty
        return
    table = pd.read_csv(table_path)
    # No published row is paired with a cell of another dataset or level.
    for r in table.itertuples():
        assert any(d == r.dataset and float(lv) == float(r.level) for d, _, lv in grid), r
    assert table["our psnr"].notna().all()  # every pairing found our number
    # Every published row of a compared method is paired, or listed once as not run here.
    paired = {
        (d, i, float(lv)) for d, i, lv in zip(table.dataset, table.image, table.level, strict=True)
    }
    in_grid = [(r.dataset, r.degradation, float(r.level)) in grid for r in wanted.itertuples()]
    runs = {
        (r.paper_dataset, r.image, float(r.level))
        for r, g in zip(wanted.itertuples(), in_grid, strict=True)
        if g
    }
    for r, here in zip(wanted.itertuples(), in_grid, strict=True):
        if here:
            assert (r.dataset, r.image, float(r.level)) in paired, r
        elif (r.paper_dataset, r.image, float(r.level)) not in runs:
            assert f"| {r.paper_dataset} | {r.image} | {r.degradation} | {r.level:g} |" in md


def test_super_resolution_x8_cells_never_meet_x4_numbers(tmp_path: Path) -> None:
    meta, records = _synthetic_run("super-resolution")
    report.write_comparison(tmp_path, meta, records)
    table = pd.read_csv(tmp_path / "paper_comparison.csv")
    assert set(table[table.dataset.str.endswith("_x8_gt")].level) <= {8.0}
    assert set(table[table.dataset.str.endswith("_x4_gt")].level) == {4.0}


def test_the_papers_bicubic_row_meets_the_bicubic_of_its_own_input(tmp_path: Path) -> None:
    """DIP's bicubic numbers were computed on LapSRN's MATLAB-imresize input: they pair with our
    ``bicubic`` on ``downsample_bicubic``, never with the bicubic of DIP's Lanczos input."""
    meta, records = _synthetic_run("super-resolution")
    for r in records:  # tell the two bicubic rows apart by their numbers
        if r.cell["method_key"] == "bicubic_dip_lr":
            r.rows[0]["psnr"] = 99.0
    paper = report.published(meta)
    assert set(paper[paper.method == "bicubic"].degradation) == {"downsample_bicubic"}
    assert set(paper[paper.method == "dip"].degradation) == {"downsample"}
    report.write_comparison(tmp_path, meta, records)
    table = pd.read_csv(tmp_path / "paper_comparison.csv")
    bicubic = table[table.published.str.startswith("Bicubic")]
    assert len(bicubic) == 2 + 5 + 14  # two means and every released image
    assert (bicubic["our psnr"] == 30.0).all()
    assert set(bicubic.ours) == {"Bicubic (MATLAB imresize, the benchmarks' LR)"}


def test_a_committed_run_folder_reports_the_same_on_a_fresh_clone(
    tmp_path: Path, mirror: Path
) -> None:
    """The run saves what the report shows (records, outputs, curves, snapshots, the views of
    the observations): committed with its cells, a run folder rebuilds the very same tables
    and figures on a fresh clone, where no test image can be had."""
    import os
    import subprocess
    import sys

    repo = tmp_path / "repo"
    run = repo / "reports" / "ci" / "inpainting-table1"
    argv = ["run", "inpainting-table1", "--profile", "ci", "--images", "house", "--out", str(run)]
    assert main([*argv, "--methods", "dip", "telea", "-q", "--jobs", "1"]) == 0
    made = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert {"grid.png", "snapshots.png", "snapshots.gif", "table.md"} <= set(made)
    assert list((run / "cells" / "views").glob("*.npz"))

    def git(*args: str, cwd: Path = repo) -> None:
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)

    git("init", "-q")
    git("add", "-f", "reports")  # a checkout's .gitignore keeps cells/ out; commit them anyway
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a run")
    clone = tmp_path / "clone"
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    cloned = clone / "reports" / "ci" / "inpainting-table1"
    for name in made:
        if name not in ("suite.json", "results.csv", "provenance.json"):  # the run's own
            (cloned / name).unlink()  # the report must rebuild them
    env = {
        **os.environ,
        "DIPBENCH_DATA": str(tmp_path / "empty-cache"),
        "DIPBENCH_MIRROR": str(tmp_path / "no-mirror"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmark", "report", str(cloned)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "empty-cache").exists()  # no image was fetched nor read
    rebuilt = {p.name: p.read_bytes() for p in cloned.iterdir() if p.is_file()}
    assert set(rebuilt) == set(made)
    assert [name for name in made if rebuilt[name] != made[name]] == []


def test_a_shortened_fit_says_which_schedules_it_scaled(mirror: Path, tmp_path: Path) -> None:
    out = tmp_path / "dd"
    argv = ["run", "inpainting-table1", "--profile", "ci", "--methods", "dd"]
    assert main([*argv, "--images", "house", "--out", str(out), "-q", "--allow-suspect"]) == 0
    notes = (out / "table.md").read_text()
    # ci: 200 steps at LR 0.01 against the preset's 40000 at 0.0025, a fiftieth of the fit.
    assert "(iterations x learning rate)" in notes
    assert "Deep Decoder: input-noise decay every 500 -> 10" in notes
    assert "ES-WMV patience 1000 -> 20" in notes


def test_a_classical_suite_of_ones_own_says_only_what_applies(mirror: Path, tmp_path: Path) -> None:
    """No network, no published number, no quick profile of its own: the table has none of
    the notes of those (a note for something absent is noise)."""
    suite = tmp_path / "mine.toml"
    suite.write_text(
        'name = "mine"\ntitle = "Mine"\ntask = "denoising"\nprotocol = "gray"\n'
        'datasets = "bm3d_gray11"\nimages = ["house"]\ncrop = 33\n'
        '[[degradations]]\nkind = "gaussian"\nlevels = [25]\n'
        "[methods.median]\n[methods.tv]\n"
    )
    out = tmp_path / "out"
    assert main(["run", str(suite), "--profile", "quick", "--out", str(out), "-q"]) == 0
    table = (out / "table.md").read_text()
    assert "the suite defines no quick profile: these are its full settings" in table
    assert "the degraded input, scored in this run per image." in table
    absent = ["NOT the paper's protocol", "network output", "italics", "oracle", "†", "§", "‡"]
    assert [text for text in absent if text in table] == []


def test_repetitions_give_every_value_its_spread(mirror: Path, tmp_path: Path) -> None:
    """With repetitions = 3, each table value of ours is mean ± std: an image's std over its
    three values, the mean's over the three per-repetition means; table.csv holds them with
    n and the mean's 95% interval, equal to computing them from results.csv by hand."""
    suite = tmp_path / "spread.toml"
    suite.write_text(
        'name = "spread"\ntitle = "Spread"\ntask = "denoising"\nprotocol = "gray"\n'
        'datasets = "bm3d_gray11"\nimages = ["house", "boat"]\ncrop = 31\nrepetitions = 3\n'
        '[[degradations]]\nkind = "gaussian"\nlevels = [25]\n[methods.median]\n'
    )
    out = tmp_path / "out"
    assert main(["run", str(suite), "--profile", "quick", "--out", str(out), "-q"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert sorted(results.repetition.unique()) == [0, 1, 2]
    by_hand = results.pivot_table(index="repetition", columns="image", values="psnr")
    means = by_hand.mean(axis=1)
    t_975_2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom
    table = pd.read_csv(out / "table.csv")
    row = table[(table.metric == "psnr") & (table.source == "ours")].iloc[0]
    assert row["mean"] == pytest.approx(means.mean())
    assert row["std"] == pytest.approx(means.std(ddof=1))
    assert row["repetitions"] == 3
    assert row["ci95"] == pytest.approx(t_975_2 * means.std(ddof=1) / np.sqrt(3))
    assert row["house std"] == pytest.approx(by_hand["house"].std(ddof=1))
    assert by_hand["house"].std(ddof=1) > 0  # a new noise realisation each repetition
    md = (out / "table.md").read_text()
    assert f"{means.mean():.2f} ± {means.std(ddof=1):.2f}" in md
    assert f"{by_hand['boat'].mean():.2f} ± {by_hand['boat'].std(ddof=1):.2f}" in md
    assert "standard deviation over the suite's 3 repetitions" in md


def test_a_released_mean_over_one_image_says_one_image(mirror: Path, tmp_path: Path) -> None:
    """A one-image run: the released outputs' mean is over that image, and says n=1 (it was
    labelled with the published mean's n=9); the published mean keeps its own n."""
    out = tmp_path / "run"
    argv = ["run", "denoising-color", "--profile", "quick", "--images", "house"]
    assert main([*argv, "--methods", "nlm", "--out", str(out), "-q"]) == 0
    lines = (out / "table.md").read_text().splitlines()
    released = next(line for line in lines if line.startswith("| *NLM (released-outputs)*"))
    assert released.endswith("(n=1) |") and "n=9" not in released
    paper = next(line for line in lines if line.startswith("| *CBM3D (paper)*"))
    assert paper.endswith("(n=9) |")
    # The run scores 96-pixel crops, the paper whole images: the published and released
    # rows are a table of their own, after ours, and no difference is given.
    ours = next(i for i, line in enumerate(lines) if line.startswith("| NLM |"))
    apart = next(i for i, line in enumerate(lines) if line.startswith("Published, on the paper"))
    assert ours < apart < lines.index(released) and lines.index(paper) > apart
    assert "not comparable" not in lines[ours]
    comparison = pd.read_csv(out / "paper_comparison.csv")
    assert len(comparison) and comparison.difference.isna().all()
    assert set(comparison["not compared"]) == {"crop"}
    assert "crop vs whole image" in (out / "paper_comparison.md").read_text()


def test_a_row_over_fewer_images_than_a_published_mean_says_so_beside_a_complete_row(
    mirror: Path, tmp_path: Path
) -> None:
    """A grown report: one method on all five Set5 images, another on one of them."""
    out = str(tmp_path / "sr")
    base = ["run", "super-resolution", "--profile", "ci", "--out", out, "-q"]
    assert main([*base, "--images", "set5_x4_gt/" + "baby", "set5_x4_gt/bird",
                 "set5_x4_gt/butterfly", "set5_x4_gt/head", "set5_x4_gt/woman",
                 "--methods", "bicubic_dip_lr"]) == 0  # fmt: skip
    assert main([*base, "--images", "set5_x4_gt/butterfly", "--methods", "lanczos"]) == 0
    lines = (tmp_path / "sr" / "table.md").read_text().splitlines()
    lanczos = next(x for x in lines if x.startswith("| Lanczos of DIP's LR"))
    bicubic = next(x for x in lines if x.startswith("| Bicubic of DIP's LR"))
    assert "(n=1 of 5: not comparable with the published mean)" in lanczos
    assert "not comparable" not in bicubic


def test_a_published_classical_number_far_under_ours_is_marked_implausible(
    tmp_path: Path,
) -> None:
    """The Deep Decoder's Fig. 2 BM3D (28.6) against our CBM3D of the same image (32.23): a
    classical method computes one number, so the published one is another setting, shown
    but not counted as a miss; a network method far above its paper stays a plain
    difference (it may be our bug), and the notebook's printed step pairs with `last`."""
    meta, records = _synthetic_run("deep-decoder")
    for r in records:
        if r.cell["image"] != "astronaut" or float(r.cell["level"]) != 30:
            continue
        if r.cell["method_key"] == "bm3d":
            r.rows[0]["psnr"] = 32.23
        if r.cell["method_key"] == "dd":
            r.info = {"iterations": 1900}
            for row in r.rows:
                row["psnr"] = {"best_loss": 33.0, "last": 28.77}.get(row["output"], 30.0)
    report.write_comparison(tmp_path, meta, records)
    table = pd.read_csv(tmp_path / "paper_comparison.csv").set_index("published")
    md = (tmp_path / "paper_comparison.md").read_text()
    assert table.loc["BM3D (published)", "implausible"]
    assert "+3.63: published implausible" in md
    assert not table.loc["Deep Decoder (published)", "implausible"]
    assert table.loc["Deep Decoder (published)", "difference"] == pytest.approx(3.4)
    notebook = table.loc["Deep Decoder, notebook's printed step (notebook-output)"]
    assert notebook["ours"].endswith("(last)") and notebook["our psnr"] == pytest.approx(28.77)
