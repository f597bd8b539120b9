"""Paired differences against a baseline method (``dipbench compare RUN --baseline METHOD``).

Every row of a run is set against the baseline's row of the same cell: same image,
degradation, level and repetition, so the same noisy input. The paired difference removes
what the images and noise realisations share, and its spread over the pairs is what a paper's
"+0.3 dB" should carry: the mean difference, its standard deviation, the number of pairs and
the half-width of the mean's 95% Student-t interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.report.tables import row_label
from benchmark.runfolder import Manifest

PAIR = ["dataset", "image", "degradation", "level", "repetition"]


def baseline_rows(results: pd.DataFrame, baseline: str) -> tuple[pd.DataFrame, str]:
    """The baseline's rows (``METHOD`` or ``METHOD/OUTPUT``) and its ``method/output`` name.

    Raises
    ------
    KeyError
        No such method in the run, or a method of several outputs named without one.
    """
    method, _, output = baseline.partition("/")
    mine = results[results.method == method]
    if mine.empty:
        known = ", ".join(sorted(set(results.method)))
        raise KeyError(f"no method {method!r} in this run; its methods: {known}")
    outputs = list(dict.fromkeys(mine.output))
    if not output:
        if len(outputs) > 1:
            choices = ", ".join(f"{method}/{o}" for o in outputs)
            raise KeyError(f"{method} has several outputs: name one ({choices})")
        output = outputs[0]
    if output not in outputs:
        raise KeyError(f"{method} has no output {output!r}; its outputs: {', '.join(outputs)}")
    return mine[mine.output == output], f"{method}/{output}"


def paired_differences(
    folder: Path, baseline: str, metric: str = "psnr"
) -> tuple[pd.DataFrame, str]:
    """One row per (degradation, level, method, output) of ``folder``'s results: the mean
    of ``metric`` minus the baseline's over the cells both have, with ``std``, ``pairs`` and
    ``ci95``; and the baseline's name."""
    meta = Manifest.read(folder)
    results = pd.read_csv(folder / "results.csv")
    results = results[(results.status == "ok") & results[metric].notna()]
    base, name = baseline_rows(results, baseline)
    base = base.set_index(PAIR)[metric].rename("baseline")
    rows = []
    for (method, output), part in results.groupby(["method", "output"], sort=False):
        if f"{method}/{output}" == name:
            continue
        joined = part.join(base, on=PAIR, how="inner")
        for (degradation, level), group in joined.groupby(["degradation", "level"], sort=False):
            diff = (group[metric] - group.baseline).to_numpy()
            n = len(diff)
            std = float(np.std(diff, ddof=1)) if n > 1 else float("nan")
            rows.append(
                {
                    "degradation": degradation,
                    "level": level,
                    "method": row_label(meta, method, output),
                    "difference": float(diff.mean()),
                    "std": std,
                    "pairs": n,
                    "ci95": stats.t.ppf(0.975, n - 1) * std / np.sqrt(n) if n > 1 else np.nan,
                    "wins": int((diff > 0).sum()),
                }
            )
    return pd.DataFrame(rows), name


def comparison_markdown(table: pd.DataFrame, baseline: str, metric: str = "psnr") -> str:
    """The paired differences as Markdown, one table per degradation level."""
    lines = [
        f"# {metric.upper()} minus {baseline}, paired by image, degradation and repetition",
        "",
        "± is the standard deviation of the paired differences; ci95 the half-width of their "
        "mean's 95% Student-t interval; wins: pairs where the row beats the baseline.",
    ]
    for (degradation, level), group in table.groupby(["degradation", "level"], sort=False):
        lines += ["", f"## {degradation} {level:g}", ""]
        lines += ["| method | difference | ci95 | pairs | wins |", "|---|---|---|---|---|"]
        for r in group.itertuples():
            spread = f" ± {r.std:.2f}" if np.isfinite(r.std) else ""
            ci = f"{r.ci95:.2f}" if np.isfinite(r.ci95) else ""
            cells = [r.method, f"{r.difference:+.2f}{spread}", ci, str(r.pairs), str(r.wins)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
