"""Commands that measure: ``check`` (the PSNR regression check), ``expect`` (its expected
values from measured spread) and ``speed``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.cli.options import EXIT_FAILED, EXIT_OK, UsageError

if TYPE_CHECKING:
    from benchmark.speed import SpeedReport


def cmd_check(args: argparse.Namespace) -> int:
    """Compare measured PSNRs with expected values; exit 1 on a regression or a missing cell."""
    import pandas as pd

    from benchmark import check

    try:
        results = check.read_results(args.results)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from err
    if args.update:
        if not args.variants:
            raise UsageError(
                "--update needs --variants: a tolerance comes from measured spread (run folders "
                "of the same grid under other seeds or kernels; dipbench expect makes them)"
            )
        try:
            variants = {Path(v).name: check.read_results([v]) for v in args.variants}
        except FileNotFoundError as err:
            raise UsageError(str(err)) from err
        from benchmark.provenance import versions

        try:
            expected = check.derive_expected(results, variants, versions())
        except check.ExpectedFileError as err:
            raise UsageError(str(err)) from err
        _write_expected(expected, args.expected)
        return EXIT_OK
    try:
        expected = check.read_expected(args.expected)
    except check.ExpectedFileError as err:
        raise UsageError(str(err)) from err
    if args.suites:
        expected, results = _only_suites(args.suites, expected, results)
    report = check.compare(results, expected, allow_new=args.allow_new)
    # A suite the results have no cell of: one line, not a line per value.
    absent = sorted(set(expected.suite) - set(results.suite))
    whole = report[report.suite.isin(absent)]
    report_shown = report[~report.suite.isin(absent)]
    shown = (
        report_shown[~report_shown.verdict.isin(["ok", "reported"])]
        if args.failures_only
        else report_shown
    )
    if "statistic" in shown and len(shown):  # a suite mean has no level of its own
        shown = shown.assign(
            level=[
                "*" if stat == "mean" else f"{level:g}"
                for stat, level in zip(shown.statistic, shown.level, strict=True)
            ]
        )
    with pd.option_context("display.max_rows", None, "display.width", 200):
        if len(shown):
            print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for suite, values in whole.groupby("suite"):
        print(f"{suite}: no result of this suite here: its {len(values)} value(s) read missing")
    counts = report.verdict.value_counts().to_dict()
    print("check: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    bad = check.failed(report)
    if len(bad):
        print(
            f"FAILED: {len(bad)} value(s) moved beyond their tolerance, are missing, or were "
            "computed by code that has changed since (stale: re-run the suite):",
            file=sys.stderr,
        )
        if absent:
            ran = sorted(set(results.suite))
            print(
                f"  {len(absent)} suite(s) of the expected file have no result here "
                f"({', '.join(absent)}); to check only the suites run: --suites "
                f"{' '.join(ran) if ran else 'SUITE'}",
                file=sys.stderr,
            )
            bad = bad[~bad.suite.isin(absent)]
        unknown = bad[bad.verdict == "unchecked"]
        for (suite, profile), values in unknown.groupby(["suite", "profile"]):
            print(
                f"  {suite} ({profile}): {len(values)} value(s) of a suite the expected file "
                f"does not know, so nothing checked them: add its expected values (dipbench "
                f"expect {suite} --profile {profile} --expected {args.expected}) or pass "
                "--allow-new",
                file=sys.stderr,
            )
        for row in bad[bad.verdict != "unchecked"].itertuples():
            where = (
                f"suite mean ({row.suite})"
                if row.statistic == "mean"
                else f"{row.suite} {row.dataset}/{row.image} {row.degradation}={row.level:g}"
            )
            print(
                f"  {where} {row.method}/{row.output}: {row.verdict} "
                f"(expected {row.expected_psnr:.2f} +- {row.tolerance:.2f}, "
                f"measured {row.measured_psnr:.2f})",
                file=sys.stderr,
            )
        print(
            "A regression is a bug to find; a change you meant (a better method, new presets) "
            "needs new expected values: dipbench expect SUITE --expected FILE (for this "
            "repository's suites: make update-expected).",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _only_suites(suites: list[str], expected: Any, results: Any) -> tuple[Any, Any]:
    """The expected values and results of ``suites`` alone; a name neither has is refused."""
    unknown = sorted(set(suites) - set(expected.suite) - set(results.suite))
    if unknown:
        raise UsageError(
            f"--suites: no expected value and no result of {', '.join(unknown)}; the expected "
            f"file has {', '.join(sorted(set(expected.suite)))}"
        )
    return expected[expected.suite.isin(suites)], results[results.suite.isin(suites)]


def _is_expected_file(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            header = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return "expected_psnr" in [column.strip() for column in header.split(",")]


def _check_writable_expected(path: Path) -> None:
    if path.exists() and not _is_expected_file(path):
        raise UsageError(
            f"--expected {path} exists and is not an expected-values file (no expected_psnr "
            "column): it is left as it is; name a new file or an expected file to rewrite"
        )


def _write_expected(expected: Any, path: Path) -> None:
    _check_writable_expected(path)
    from benchmark.runfolder import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: expected.to_csv(p, index=False))
    gated = expected[expected.gated]
    widest = gated.loc[gated.tolerance.idxmax()] if len(gated) else None
    print(
        f"wrote {path}: {len(expected)} values, {len(gated)} gated"
        + (
            f"; widest gated tolerance {widest.tolerance:.3f} dB "
            f"({widest.statistic} {widest.suite} {widest.method}/{widest.output})"
            if widest is not None
            else ""
        )
    )


def cmd_expect(args: argparse.Namespace) -> int:
    """Measure a grid's spread over seeds and kernels and write its expected values."""
    from benchmark import check, expect, runner
    from benchmark.suites import SuiteError, load_suite, packaged_suites

    _check_writable_expected(args.expected)  # before the runs, not after them
    names = args.suites or packaged_suites()
    try:
        suites = [(name, load_suite(name, args.profile)) for name in names]
    except SuiteError as err:
        raise UsageError(str(err)) from err
    from benchmark.cli.runs import check_grid_size

    for _, suite in suites:
        check_grid_size(suite, confirmed=False)  # expect runs each grid a dozen times
    runnable = []
    for name, suite in suites:
        reason = runner.fetch_suite_images(suite)
        if reason:
            print(f"skipped {suite.name}: its images cannot be had here: {reason}")
        else:
            runnable.append(name)
    if not runnable:
        raise UsageError("no suite can run here: nothing to measure")
    plan = [expect.REFERENCE, *expect.variants(args.seeds)]
    print(
        f"{len(plan)} runs of the {args.profile} grid of {len(runnable)} suite(s) into "
        f"{args.work}: " + "; ".join(f"{v.name} ({v.describe()})" for v in plan)
    )
    try:
        expected = expect.measure(
            runnable,
            args.profile,
            args.work,
            runner.versions(),
            seeds=args.seeds,
            jobs=args.jobs,
            quiet=args.quiet,
            methods=args.methods,
        )
    except (RuntimeError, check.ExpectedFileError) as err:
        print(f"dipbench expect: {err}; {args.expected} was left as it was", file=sys.stderr)
        return EXIT_FAILED
    expected, kept = expect.merged(expected, args.expected, args.methods)
    if kept:
        print(f"kept the values {args.expected} holds for {', '.join(kept)} (not re-measured)")
    _write_expected(expected, args.expected)
    return EXIT_OK


def cmd_speed(args: argparse.Namespace) -> int:
    """Measure steps per second, the batching gain, throughput and suite wall times."""
    import torch

    from benchmark import speed
    from benchmark.methods import get_method

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        get_method(args.method)
    except KeyError as err:
        raise UsageError(str(err.args[0] if err.args else err)) from err
    if not speed.preset_configured(args.method):
        return _speed_of_contract(args)
    if args.option:
        raise UsageError(
            f"--option is for methods that fit their own loop; {args.method}'s network and "
            "fit come from its presets (dipbench methods lists them): pass --suite"
        )
    try:
        report = speed.measure(
            args.method,
            size=args.size,
            batch=args.batch,
            batch_size=args.batch_size,
            device=args.device,
            suite=args.suite,
            profile=args.profile,
            steps=args.steps,
            repeats=args.repeats,
            batch_steps=args.batch_steps,
            estimate=not args.no_estimate,
            progress=lambda message: print(f"measuring: {message}", file=sys.stderr),
        )
    except (KeyError, ValueError) as err:
        raise UsageError(str(err.args[0] if err.args else err)) from err
    print(format_speed_report(report))
    return EXIT_OK


def _speed_of_contract(args: argparse.Namespace) -> int:
    """``speed`` of a network method that fits its own loop: what its contract measures."""
    from benchmark import speed_contract
    from benchmark.methods import get_method
    from benchmark.suite_schema import check_options_for

    info = get_method(args.method)
    if info.network is None:
        raise UsageError(f"{info.name} fits no network: dipbench speed measures network methods")
    if args.suite:
        raise UsageError(f"--suite is for methods configured by presets; {info.name} fits its own")
    options = dict(args.option or [])
    check_options_for(info, "denoising", None, options, args.method, UsageError)
    print(f"measuring: {info.name} through its network contract", file=sys.stderr)
    report = speed_contract.measure_contract(
        args.method,
        size=args.size,
        batch=args.batch,
        batch_size=args.batch_size,
        device=args.device,
        options=options,
        steps=args.steps,
    )
    print(speed_contract.format_contract(report))
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    """Paired differences of every row of a run against a baseline method."""
    from benchmark.report.compare import comparison_markdown, paired_differences

    if not (args.dir / "results.csv").is_file() or not (args.dir / "suite.json").is_file():
        raise UsageError(f"{args.dir} holds no results.csv and suite.json: name a run folder")
    try:
        table, name = paired_differences(args.dir, args.baseline, args.metric)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    if table.empty:
        print(f"dipbench compare: no cell of another method shares an input with {name}")
        return EXIT_FAILED
    print(comparison_markdown(table, name, args.metric), end="")
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return EXIT_OK


def format_speed_report(report: SpeedReport) -> str:
    """The text ``dipbench speed`` prints."""
    import torch

    ms = 1e3
    lines = [
        f"dipbench speed: {report.device}, {report.threads} torch thread(s), torch "
        f"{torch.__version__}",
        f"network: {report.setup.label}",
        "freed memory: kept for the next step (DIPBENCH_KEEP_HEAP=0: handed back at once)"
        if report.heap_kept
        else "freed memory: handed back at once (glibc's default; not on glibc, or switched off)",
        "",
        f"one cell, {report.size}x{report.size} RGB, denoising:",
        f"  plain eager PyTorch loop   {report.eager_seconds * ms:8.1f} ms/step",
        f"  dipbench bare step         {report.bare_seconds * ms:8.1f} ms/step",
        f"  dipbench whole loop        {report.loop_seconds * ms:8.1f} ms/step   "
        f"{1 / report.loop_seconds:.2f} steps/s",
        f"  bookkeeping (EMA, ES-WMV, curves, checks) "
        f"{report.loop_seconds / report.bare_seconds - 1:+.1%} on a bare step",
        f"  whole loop vs plain eager  {report.eager_seconds / report.loop_seconds:.2f}x as fast",
    ]
    if report.batch:
        gain = report.batched_cell_steps / report.alone_cell_steps
        lines += [
            "",
            f"{report.batch} cells, {report.batch_size}x{report.batch_size}, "
            f"{report.batch_steps} steps each:",
            f"  one at a time   {report.alone_cell_steps:8.1f} cell-steps/s",
            f"  batched         {report.batched_cell_steps:8.1f} cell-steps/s   ({gain:.2f}x)",
            f"  largest |PSNR difference| batched vs alone: {report.batch_psnr_difference:.2e} dB",
        ]
    achieved = report.step_gflop / report.loop_seconds
    lines += [
        "",
        f"convolution throughput: {report.conv_gflops:,.0f} GFLOP/s (3x3, 128 channels, 128x128,"
        " forward + backward)",
        f"a fit step: {report.step_gflop:.2f} GFLOP -> {achieved:,.0f} GFLOP/s, "
        f"{achieved / report.conv_gflops:.0%} of it",
    ]
    if report.suite_hours:
        lines += [
            "",
            "estimated wall time of the full profile on this device, one worker (steps "
            "measured at each shape the suites fit, batches as --batch auto makes them):",
        ]
        lines += [f"  {name:<20} {hours:10,.1f} h" for name, hours in report.suite_hours.items()]
        lines.append(f"  {'all suites':<20} {sum(report.suite_hours.values()):10,.1f} h")
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)
