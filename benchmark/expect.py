"""Expected values with measured tolerances: run a grid as the reference and under variants.

A variant changes what another machine or another run changes, and nothing else: the methods'
own seeds (``--method-seed K``), the instruction sets that oneDNN and ATen pick
(``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=default``: on one machine they reproduce
most of what another CPU's kernels do) and the number of torch threads (reduction order).
Each variant is a separate ``dipbench run`` process, because the kernel settings are read
when torch starts. :func:`benchmark.check.derive_expected` turns the runs into tolerances.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark import check


@dataclass(frozen=True)
class Variant:
    """One way of running the grid: extra command-line arguments and environment."""

    name: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.env.items()] + list(self.args)
        return " ".join(parts) or "default"


REFERENCE = Variant("reference")
KERNEL_VARIANTS = (
    Variant("onednn-avx2", env={"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    Variant("aten-default", env={"ATEN_CPU_CAPABILITY": "default"}),
    Variant("threads-2", args=("--threads", "2", "--jobs", "1")),
)


def variants(seeds: int) -> list[Variant]:
    """``seeds`` seed variants (method seed streams 1..seeds), then the kernel variants."""
    seeded = [Variant(f"seed-{k}", args=("--method-seed", str(k))) for k in range(1, seeds + 1)]
    return seeded + list(KERNEL_VARIANTS)


def run_variant(
    variant: Variant,
    suites: Sequence[str],
    profile: str,
    out: Path,
    *,
    jobs: int | None = None,
    quiet: bool = True,
    methods: Sequence[str] | None = None,
) -> Path:
    """Run every suite (only ``methods``' cells, if given) under ``variant`` into
    ``out/<variant>/<suite>``; return that folder.

    The folder is emptied first: a cell's key does not include the kernel settings, so cells
    left from an earlier measurement would be taken for this one's.

    Raises
    ------
    RuntimeError
        A run stopped without writing its results (a usage error, a crash); failed cells
        (exit 1 with results) are recorded there and left to the comparison.
    """
    folder = out / variant.name
    refuse_foreign(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / OWNER_MARK).write_text(
        "written by dipbench expect; emptied by its next run\n", encoding="utf-8"
    )
    env = {**os.environ, **variant.env}
    for suite in suites:
        name = Path(suite).stem if suite.endswith(".toml") else suite
        command = [sys.executable, "-m", "benchmark", "run", suite, "--profile", profile]
        command += ["--out", str(folder / name), "--no-report", *variant.args]
        if jobs is not None and "--jobs" not in variant.args:
            command += ["--jobs", str(jobs)]
        if methods:
            command += ["--methods", *methods]
        if quiet:
            command.append("-q")
        code = subprocess.run(command, env=env, check=False).returncode
        if code >= 2 or not (folder / name / "results.csv").is_file():
            raise RuntimeError(
                f"{' '.join(command)} exited with {code} ({variant.describe()}) "
                "without its results: see its output above"
            )
    return folder


OWNER_MARK = ".dipbench-expect"  # in each variant folder: ours to empty on the next run


def refuse_foreign(folder: Path) -> None:
    """A variant folder is emptied before its run: only one that ``expect`` made may be.

    Raises
    ------
    RuntimeError
        ``folder`` exists and has no :data:`OWNER_MARK` (a user's folder, or a file).
    """
    if folder.exists() and not (folder / OWNER_MARK).is_file():
        raise RuntimeError(
            f"{folder} exists and was not written by dipbench expect: it is left as it is; "
            "choose another --work folder"
        )


def measure(
    suites: Sequence[str],
    profile: str,
    out: Path,
    versions: dict[str, str],
    *,
    seeds: int = 8,
    jobs: int | None = None,
    quiet: bool = True,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Run the reference and every variant (only ``methods``' cells, if given), then derive
    the expected table."""
    for variant in [REFERENCE, *variants(seeds)]:  # before the first run, not an hour in
        refuse_foreign(out / variant.name)
    folders = {
        v.name: run_variant(v, suites, profile, out, jobs=jobs, quiet=quiet, methods=methods)
        for v in [REFERENCE, *variants(seeds)]
    }
    reference = check.read_results([folders.pop(REFERENCE.name)])
    others = {name: check.read_results([folder]) for name, folder in folders.items()}
    return check.derive_expected(reference, others, versions)


def merged(
    expected: pd.DataFrame, path: Path, methods: Sequence[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """``expected`` with the values ``path`` holds for the suites it does not measure (kept:
    re-measuring one suite leaves the others' values as they were), and those suites' names.
    With ``methods``, only those methods' values of the measured suites are replaced: the
    other methods' values are kept too (and named ``suite: method``).

    A file that cannot be read as an expected file is replaced whole, as before.
    """
    try:
        before = check.read_expected(path)
    except check.ExpectedFileError:
        return expected, []
    measured = before.suite.isin(set(expected.suite))
    if methods:
        measured &= before.method.isin(set(methods))
    kept = before[~measured]
    if kept.empty:
        return expected, []
    table = pd.concat([kept.astype(object), expected.astype(object)], ignore_index=True)
    table = table.reindex(columns=expected.columns)
    # The order derive_expected writes: every cell value, then every mean, by suite.
    table = table.sort_values(["statistic", "suite"], kind="stable", ignore_index=True)
    other_suites = ~kept.suite.isin(set(expected.suite))
    names = set(kept.suite[other_suites])
    same = kept[~other_suites]
    names |= {f"{s}: {m}" for s, m in zip(same.suite, same.method, strict=True)}
    return table, sorted(names)
