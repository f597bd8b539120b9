"""`dipbench export` (a report's numbers as parquet, JSON and LaTeX that other tools read) and
`dipbench compare` (paired differences against a baseline)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main


@pytest.fixture(scope="module")
def spread_run(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """Two classical methods on two odd-sized crops, three repetitions (seconds)."""
    folder = tmp_path_factory.mktemp("export")
    suite = folder / "spread.toml"
    suite.write_text(
        'name = "spread"\ntitle = "Spread & export"\ntask = "denoising"\nprotocol = "gray"\n'
        'datasets = "bm3d_gray11"\nimages = ["house", "boat"]\ncrop = 31\nrepetitions = 3\n'
        '[[degradations]]\nkind = "gaussian"\nlevels = [25]\n[methods.median]\n[methods.tv]\n'
    )
    out = folder / "run"
    assert main(["run", str(suite), "--profile", "quick", "--out", str(out), "-q"]) == 0
    return out


def test_the_tidy_table_has_one_row_per_cell_output_and_metric(spread_run: Path) -> None:
    assert main(["export", str(spread_run), "--format", "json"]) == 0
    tidy = pd.read_json(spread_run / "export" / "export.json", orient="records")
    results = pd.read_csv(spread_run / "results.csv")
    assert len(tidy) == 2 * len(results) == 2 * 2 * 2 * 3  # metrics x images x methods x reps
    psnr = tidy[tidy.metric == "psnr"].set_index(["key", "output"]).value
    pairs = list(zip(results.key, results.output, strict=True))
    np.testing.assert_allclose(psnr.loc[pairs], results.psnr)
    assert set(tidy.label) == {"median", "tv"} and set(tidy.repetition) == {0, 1, 2}
    # every row names the lossless file and array that hold its output
    row = tidy.iloc[0]
    saved = np.load(spread_run / row.output_file)[row.output]
    assert saved.shape == (31, 31, 1)


def test_parquet_reads_back_as_the_json(spread_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    assert (
        main(["export", str(spread_run), "--format", "parquet", "json", "--out", str(tmp_path)])
        == 0
    )
    parquet = pd.read_parquet(tmp_path / "export.parquet")
    json = pd.read_json(tmp_path / "export.json", orient="records")
    assert list(parquet.columns) == list(json.columns)
    np.testing.assert_allclose(parquet.value, json.value)


def test_latex_has_the_spread_and_one_bold_value_per_column(spread_run: Path) -> None:
    assert main(["export", str(spread_run), "--format", "latex"]) == 0
    tex = (spread_run / "export" / "table.tex").read_text()
    tables = tex.split(r"\end{tabular}")[:-1]
    assert len(tables) == 2  # PSNR and SSIM
    table = pd.read_csv(spread_run / "table.csv")
    psnr = table[(table.metric == "psnr") & (table.source == "ours")].set_index("method")
    best = psnr["mean"].idxmax()
    for line in tables[0].splitlines():
        if line.startswith(best):
            mean = f"{psnr.loc[best, 'mean']:.2f} \\pm {psnr.loc[best, 'std']:.2f}"
            assert rf"$\mathbf{{{mean}}}$" in line
        if line.startswith("trivial baseline"):
            assert r"\mathbf" not in line  # the degraded input is no candidate
    for block in tables:
        assert block.count(r"\mathbf") == 3  # house, boat, mean
    assert r"Spread \& export" not in tex and r"\pm" in tex


def _latex_problems(tex: str) -> list[str]:
    """What would stop pdflatex in ``tex``'s tables, checked without one: a row with another
    number of cells than its column spec, unbalanced braces or math, a special character
    left unescaped in text, a character outside ASCII (pdflatex sets none of the marks)."""
    problems = []
    columns = 0
    for line in tex.splitlines():
        if line.startswith("%") or not line:
            continue
        spec = re.match(r"\\begin\{tabular\}\{([lrc]+)\}$", line)
        if spec:
            columns = len(spec[1])
            continue
        if not line.isascii():
            problems.append(f"not ASCII: {line}")
        bare = re.sub(r"\\[&%$#_{}]", "", line)  # escaped specials are text
        if bare.count("{") != bare.count("}") or bare.count("$") % 2:
            problems.append(f"unbalanced: {line}")
        text = re.sub(r"\$[^$]*\$", "", bare)  # outside math
        if re.search(r"[_^~%#]", text):
            problems.append(f"unescaped: {line}")
        if line.endswith(r"\\") and bare.count("&") != columns - 1:
            problems.append(f"{bare.count('&') + 1} cells for {columns} columns: {line}")
    return problems


def test_latex_is_well_formed_without_a_compiler(spread_run: Path) -> None:
    from benchmark.report.export import latex_text
    from benchmark.report.notes import NOT_DETECTED_MARK, STALE_MARK, SUSPECT_MARK

    assert main(["export", str(spread_run), "--format", "latex"]) == 0
    tex = (spread_run / "export" / "table.tex").read_text()
    assert _latex_problems(tex) == []
    # a user's label with every special character and the tables' marks
    label = (
        f"my_net 50% #2 {{a}} $x$ ~^ \\ & last† {SUSPECT_MARK}{NOT_DETECTED_MARK}{STALE_MARK} ±×"
    )
    row = "\\begin{tabular}{lr}\n" + latex_text(label) + r" & $1.00$ \\"
    assert _latex_problems(row) == []
    assert _latex_problems("\\begin{tabular}{lr}\na_b & $1$ \\\\") == ["unescaped: a_b & $1$ \\\\"]


def test_latex_compiles_where_a_compiler_is_installed(spread_run: Path, tmp_path: Path) -> None:
    compiler = shutil.which("pdflatex")
    if compiler is None:
        pytest.skip("no pdflatex here")
    assert main(["export", str(spread_run), "--format", "latex", "--out", str(tmp_path)]) == 0
    body = (tmp_path / "table.tex").read_text()
    document = "\\documentclass{article}\n\\begin{document}\n" + body + "\\end{document}\n"
    (tmp_path / "doc.tex").write_text(document)
    done = subprocess.run(
        [compiler, "-interaction=nonstopmode", "doc.tex"], cwd=tmp_path, capture_output=True
    )
    assert done.returncode == 0, done.stdout[-2000:]


def test_a_folder_without_a_report_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"holds no suite\.json: export reads a run folder's report", err)


def test_compare_pairs_each_cell_with_the_baselines_same_input(
    spread_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """TV minus median over the 2 images x 3 repetitions, pair by pair, by hand."""
    csv = tmp_path / "compare.csv"
    assert main(["compare", str(spread_run), "--baseline", "median", "--csv", str(csv)]) == 0
    results = pd.read_csv(spread_run / "results.csv")
    wide = results.pivot_table(index=["image", "repetition"], columns="method", values="psnr")
    diff = wide["tv"] - wide["median"]
    row = pd.read_csv(csv).iloc[0]
    assert row["method"] == "tv" and row["pairs"] == 6
    assert row["difference"] == pytest.approx(diff.mean())
    assert row["std"] == pytest.approx(diff.std(ddof=1))
    assert row["wins"] == int((diff > 0).sum())
    assert f"| tv | {diff.mean():+.2f} ± {diff.std(ddof=1):.2f} |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["compare", str(spread_run), "--baseline", "bm3d"])
    assert "no method 'bm3d' in this run; its methods: median, tv" in capsys.readouterr().err
