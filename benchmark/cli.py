"""The ``dipbench`` command line.

Exit codes: 0 success, 1 a failed check or failed work, 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pooch
import torch
from tqdm import tqdm

from benchmark import __version__, images, metrics

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: reported on stderr, exit 2."""


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _selected(args: argparse.Namespace, registry: list[images.Entry]) -> list[images.Entry]:
    if not args.sets:
        return registry
    try:
        return images.select(registry, args.sets)
    except KeyError as err:
        raise UsageError(err.args[0]) from err


def _positive_int(value: str) -> int:
    """An argparse type: an integer of at least 1 (a count of threads, jobs, steps)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _device(value: str) -> str:
    """An argparse type: a device that exists here, checked before any work starts."""
    from benchmark.methods.fit import resolve_device

    try:
        resolve_device(value)
    except (ValueError, RuntimeError) as err:
        raise argparse.ArgumentTypeError(
            f"{err}. Choose auto, cpu, cuda, cuda:N or mps; a CUDA GPU needs a CUDA build of "
            "torch (README, section GPU)"
        ) from None
    return value


def _batch(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {value!r}") from None
    if size < 1:
        raise argparse.ArgumentTypeError("--batch must be at least 1")
    return size


BATCH_HELP = (
    "network cells fitted together on one device: auto (CPU: 16 when a step is at most "
    "0.5 GFLOP, else 1; CUDA: about a million pixels per batch) or a number; 1 fits each "
    "cell alone (default: auto). Batched cells equal lone fits: bit for bit on the CPU, up "
    "to float rounding on CUDA"
)


def cmd_datasets(args: argparse.Namespace) -> int:
    """List sets and images and whether each is on disk."""
    registry = images.load_registry()
    entries = _selected(args, registry)
    root = images.data_dir()
    print(f"cache: {root}")
    for set_name in images.set_names(entries):
        members = [e for e in entries if e.set == set_name]
        on_disk = [images.cached_path(e, root).is_file() for e in members]
        total = sum(e.bytes for e in members)
        print(
            f"{set_name:<14} {len(members):>3} file(s) {_human_bytes(total):>9}  "
            f"{sum(on_disk)}/{len(members)} on disk"
        )
        if args.summary:
            continue
        for entry, present in zip(members, on_disk, strict=True):
            size = f"{entry.width}x{entry.height}" if entry.kind == "image" else entry.kind
            state = "on disk" if present else "missing"
            print(f"    {entry.name:<34} {size:>9} {entry.mode:<4} {state}")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    """Fetch and verify files; report what was downloaded, cached, replaced or failed."""
    registry = images.load_registry()
    if not args.sets and not args.all:
        raise UsageError(
            "name one or more sets, or --all; sets: " + ", ".join(images.set_names(registry))
        )
    entries = registry if args.all else _selected(args, registry)
    root = images.data_dir()
    counts: Counter[str] = Counter()
    problems: list[tuple[str, str]] = []
    bar = tqdm(entries, desc="download", unit="file", disable=args.quiet or None)
    for entry in bar:
        bar.set_postfix_str(f"{entry.set}/{entry.name}", refresh=False)
        try:
            _, status = images.fetch(entry, root=root)
        except images.DownloadError as err:
            status = "unavailable" if err.unavailable else "failed"
            problems.append((status, str(err)))
        counts[status] += 1
        if status == "replaced":
            tqdm.write(f"replaced {entry.set}/{entry.name}: the cached copy failed its checksum")
    bar.close()
    for status, message in problems:
        print(f"{status}: {message}", file=sys.stderr)
    summary = ", ".join(
        f"{counts[k]} {k}"
        for k in ("downloaded", "cached", "replaced", "unavailable", "failed")
        if counts[k]
    )
    print(f"{len(entries)} file(s) in {root}: {summary}")
    if counts["failed"] or (counts["unavailable"] and not args.skip_unavailable):
        return EXIT_FAILED
    if entries and counts["unavailable"] == len(entries):
        print(
            "nothing could be fetched: every file is unavailable from its source. "
            + images.MIRROR_HINT,
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _load_suite(args: argparse.Namespace) -> Any:
    from benchmark.suites import SuiteError, load_suite

    try:
        return load_suite(
            args.suite,
            args.profile,
            images_subset=args.images,
            methods_subset=args.methods,
            method_seed=args.method_seed,
        )
    except SuiteError as err:
        raise UsageError(str(err)) from err


def cmd_list(args: argparse.Namespace) -> int:
    """Suites with their grids and cell counts per profile."""
    from benchmark.suites import PROFILES, load_suite, packaged_suites

    for name in packaged_suites():
        suites = {p: load_suite(name, p) for p in PROFILES}
        full = suites["full"]
        print(f"{name:<18} {full.title}")
        for profile, suite in suites.items():
            degradations = ", ".join(
                f"{d['kind']} {d['levels']}"
                if "levels" in d
                else f"{d['kind']} severity {d['imagenet_c']}"
                for d in suite.degradations
            )
            crop = f"crop {suite.crop}" if suite.crop else "full size"
            print(
                f"    {profile:<6} {len(suite.cells()):>5} cells: {len(suite.images)} images "
                f"({crop}) x {degradations} x {len(suite.methods)} methods "
                f"({', '.join(m.key for m in suite.methods)})"
            )
    return EXIT_OK


LONG_RUN_HOURS = 1.0  # a run estimated longer than this asks for --yes


def _confirm_long_run(suite: Any, todo: Sequence[Any], args: argparse.Namespace, jobs: int) -> None:
    """Print a network run's estimated time; one over ``LONG_RUN_HOURS`` starts only after
    ``--yes`` or a "y" typed at a terminal. The ci profile (a few minutes) is not estimated."""
    from benchmark import runner
    from benchmark.methods.priors import has_presets

    if suite.profile == "ci" or not any(has_presets(c.method) for c in todo):
        return
    steps = runner.measure_step_seconds(args.device)
    hours = runner.estimate_seconds(suite, steps, todo) / 3600 / max(1, jobs)
    print(
        f"estimated time: about {hours:.1f} h with {jobs} job(s) on {args.device} (a rough "
        "figure scaled from one measured step)"
    )
    if hours <= LONG_RUN_HOURS or args.yes:
        return
    if sys.stdin.isatty():
        if input("start it? [y/N] ").strip().lower() in ("y", "yes"):
            return
        raise UsageError("not started")
    raise UsageError(
        f"this run needs about {hours:.1f} h here: add --yes to start it, or use "
        "--profile quick (a 2-core CPU finishes every quick suite in about an hour)"
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) a suite's grid; failed cells are listed and make the exit code 1."""
    from benchmark import runner

    suite = _load_suite(args)
    out = args.out or runner.default_out(suite.profile, suite.name)
    cells = suite.cells()
    if not cells:
        raise UsageError(
            f"suite {suite.name!r} ({suite.profile}) has no cell: its methods run on none of its "
            "degradations, or the selection removed them all"
        )
    jobs = args.jobs if args.jobs is not None else runner.default_jobs(args.device)
    todo = runner.pending(cells, out, args.device, args.threads)
    print(
        f"{suite.name} ({suite.profile}): {len(cells)} cells, {len(cells) - len(todo)} already "
        f"done, {len(todo)} to run -> {out}"
    )
    _confirm_long_run(suite, todo, args, jobs)
    slurm = {
        "partition": args.slurm_partition,
        "gpus": args.slurm_gpus,
        "time_min": args.slurm_time,
        "array_parallelism": args.slurm_array_parallelism,
        "cluster": args.slurm_cluster,
    }
    table, _ = runner.run_suite(
        suite,
        out,
        device=args.device,
        jobs=jobs,
        threads=args.threads,
        executor=args.executor,
        slurm=slurm,
        show_progress=not args.quiet,
        batch=args.batch,
    )
    failed = table[table.status != "ok"]
    print(f"wrote {out / 'results.csv'} ({len(table)} rows)")
    elsewhere = runner.claimed_elsewhere(cells, out, args.device, args.threads)
    if elsewhere:
        print(
            f"{len(elsewhere)} cell(s) are being computed by another run on this folder (their "
            "lock files in cells/); run the same command again when it ends to collect them"
        )
    if not args.no_report:
        from benchmark import report

        report.write_report(out)
        print(f"wrote {out / 'table.md'} and figures")
    suspect = _report_suspects(table, suite.name)
    if len(failed):
        print(f"{len(failed)} failed cell(s):", file=sys.stderr)
        for row in failed.itertuples():
            print(
                f"  {row.dataset}/{row.image} {row.degradation}={row.level:g} {row.method}: "
                f"{row.error}",
                file=sys.stderr,
            )
        return EXIT_FAILED
    if _refuse_suspects(suspect, suite.profile, args.allow_suspect):
        return EXIT_FAILED
    return EXIT_OK


def _add_allow_suspect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-suspect",
        action="store_true",
        help="exit 0 even when the full profile flags suspect cells (a network output more than "
        "1 dB under its task's trivial baseline, or last 10 dB under its oracle)",
    )


def _add_method_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method-seed",
        type=int,
        default=0,
        metavar="K",
        help="draw each method's own randomness (network initialisation, input noise) from "
        "stream K; the degraded inputs stay the same. 0 (default): the suite's seeds. Used to "
        "measure a method's spread over seeds (make update-expected)",
    )


def _refuse_suspects(suspects: list[str], profile: str, allowed: bool) -> bool:
    """Whether suspect cells fail the command: at the full profile, unless allowed."""
    if not suspects or profile != "full" or allowed:
        return False
    print(
        f"{len(suspects)} suspect cell(s) in the full profile (above): exit 1; "
        "--allow-suspect accepts them",
        file=sys.stderr,
    )
    return True


def _report_suspects(table: Any, suite: str) -> list[str]:
    """Print the suspect cells of a run (numbers that look impossible) and return them."""
    if "suspect" not in table:
        return []
    rows = table[table.suspect.fillna("").astype(str) != ""].drop_duplicates("key")
    lines = [
        f"{suite}: {r.dataset}/{r.image} {r.degradation}={r.level:g} {r.method}: {r.suspect}"
        for r in rows.itertuples()
    ]
    if lines:
        print(f"{len(lines)} suspect cell(s) (marked ‡ in the tables):", file=sys.stderr)
        for line in lines:
            print(f"  suspect: {line}", file=sys.stderr)
    return lines


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run every suite (the paper protocol on a CUDA GPU, else quick), report, index."""
    from benchmark import report, runner
    from benchmark.methods.fit import resolve_device
    from benchmark.suites import SuiteError, load_suite, packaged_suites

    device = resolve_device(args.device)
    profile = args.profile or ("full" if device.type == "cuda" else "quick")
    names = args.suites or packaged_suites()
    try:
        suites = [load_suite(name, profile, method_seed=args.method_seed) for name in names]
    except SuiteError as err:
        raise UsageError(str(err)) from err
    if args.profile is None and profile != "full":
        steps = runner.measure_step_seconds(args.device)
        hours = sum(runner.estimate_seconds(load_suite(n, "full"), steps) for n in names) / 3600
        print(
            f"No CUDA GPU here (device {device}): running the quick profile, which is NOT the "
            f"papers' protocol. The full profile would take roughly {hours:,.0f} hours on this "
            "device (a rough estimate from a measured step); PROFILE=full forces it."
        )
    root = args.out or runner.default_out(profile, "x").parent.parent
    jobs = args.jobs if args.jobs is not None else runner.default_jobs(args.device)
    failed, skipped, suspects = [], [], []
    for suite in suites:
        reason = runner.unavailable_reason(suite)
        if reason:
            print(f"skipped {suite.name}: its images cannot be had here: {reason}")
            skipped.append(suite.name)
            continue
        out = root / profile / suite.name
        print(f"== {suite.name} ({profile}) -> {out}")
        table, _ = runner.run_suite(
            suite,
            out,
            device=args.device,
            jobs=jobs,
            threads=args.threads,
            show_progress=not args.quiet,
            batch=args.batch,
        )
        report.write_report(out)
        failed += [
            f"{suite.name}: {r.image} {r.method}: {r.error}"
            for r in table[table.status != "ok"].itertuples()
        ]
        suspects += _report_suspects(table, suite.name)
    if len(skipped) == len(suites):
        print(
            "no suite could run: the images of every suite are unavailable here. "
            + images.MIRROR_HINT,
            file=sys.stderr,
        )
        return EXIT_FAILED
    index = report.write_index(root)
    for line in failed:
        print(f"failed cell: {line}", file=sys.stderr)
    if skipped:
        print(f"skipped suite(s): {', '.join(skipped)} (see above)")
    print(f"index of the reports: {index}")
    if _refuse_suspects(suspects, profile, args.allow_suspect):
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Compare measured PSNRs with expected values; exit 1 on a regression or a missing cell."""
    from benchmark import check, runner

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
        try:
            expected = check.derive_expected(results, variants, runner.versions())
        except check.ExpectedFileError as err:
            raise UsageError(str(err)) from err
        _write_expected(expected, args.expected)
        return EXIT_OK
    try:
        expected = check.read_expected(args.expected)
    except check.ExpectedFileError as err:
        raise UsageError(str(err)) from err
    report = check.compare(results, expected)
    shown = report[~report.verdict.isin(["ok", "reported"])] if args.failures_only else report
    with pd.option_context("display.max_rows", None, "display.width", 200):
        if len(shown):
            print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    counts = report.verdict.value_counts().to_dict()
    print("check: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    bad = check.failed(report)
    if len(bad):
        print(
            f"FAILED: {len(bad)} gated value(s) moved beyond their tolerance or are missing:",
            file=sys.stderr,
        )
        for row in bad.itertuples():
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
            "needs new expected values: make update-expected (or dipbench expect).",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _write_expected(expected: pd.DataFrame, path: Path) -> None:
    from benchmark.runner import atomic_write

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

    names = args.suites or packaged_suites()
    try:
        suites = [(name, load_suite(name, args.profile)) for name in names]
    except SuiteError as err:
        raise UsageError(str(err)) from err
    runnable = []
    for name, suite in suites:
        reason = runner.unavailable_reason(suite)
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
        )
    except (RuntimeError, check.ExpectedFileError) as err:
        print(f"dipbench expect: {err}; {args.expected} was left as it was", file=sys.stderr)
        return EXIT_FAILED
    _write_expected(expected, args.expected)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """(Re)write a run folder's tables and figures from its cells; --index for a tree."""
    from benchmark import report

    if args.index:
        print(f"wrote {report.write_index(args.dir)}")
        return EXIT_OK
    try:
        written = report.write_report(args.dir, figures=not args.no_figures)
    except report.NoRecordsError as err:
        print(f"dipbench report: {err}", file=sys.stderr)
        return EXIT_FAILED
    except FileNotFoundError as err:
        raise UsageError(str(err)) from err
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK


def cmd_methods(args: argparse.Namespace) -> int:
    """Every method, its tasks, and for the networks each preset with its parameter counts."""
    from benchmark.methods import METHODS
    from benchmark.methods.networks import count_parameters
    from benchmark.methods.priors import build_network, load_presets

    presets = load_presets()
    for info in sorted(METHODS.values(), key=lambda m: (m.name not in presets, m.name)):
        print(f"{info.name:<16} {', '.join(info.tasks):<44} {info.description}")
        for preset in presets.get(info.name, {}).values():
            counts = [
                count_parameters(build_network(preset.network, c, torch.Generator().manual_seed(0)))
                for c in (1, 3)
            ]
            print(
                f"    {preset.name:<20} params {counts[0]:>9,} (1 ch) {counts[1]:>9,} (3 ch)  "
                f"{preset.fit['iterations']:>6} it  lr {preset.fit['lr']:<7} "
                f"output {preset.output:<9} {preset.description}"
            )
    return EXIT_OK


def cmd_speed(args: argparse.Namespace) -> int:
    """Measure steps per second, the batching gain, throughput and suite wall times."""
    from benchmark import speed

    if args.threads is not None:
        torch.set_num_threads(args.threads)
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
    print(speed.format_report(report))
    return EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    """Score restored images made elsewhere against ground truths, per image and on average.

    Every pair that can be scored is; each file that cannot is named on its own line, and the
    exit code is then 1.
    """
    from benchmark.runner import atomic_write

    if args.out and not args.out.parent.is_dir():
        raise UsageError(f"--out {args.out}: the folder {args.out.parent} does not exist")
    try:
        found = metrics.score_folders(args.gt, args.pred, args.protocol)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from err
    table = found.table
    if found.unmatched:
        print(f"not matched (in one folder only): {', '.join(found.unmatched)}", file=sys.stderr)
    for problem in found.problems:
        print(f"not scored: {problem}", file=sys.stderr)
    if table.empty:
        print("nothing scored: no image name in common that could be read", file=sys.stderr)
        return EXIT_FAILED
    mean = pd.DataFrame([{"image": "mean", **table[["psnr", "ssim"]].mean(), "notes": ""}])
    shown = pd.concat([table, mean], ignore_index=True)
    if not shown.notes.astype(bool).any():
        shown = shown.drop(columns="notes")
    print(f"protocol {args.protocol}: {metrics.PROTOCOLS[args.protocol].description}")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        atomic_write(args.out, lambda p: table.to_csv(p, index=False))
        print(f"wrote {args.out}")
    if found.problems:
        print(
            f"{len(found.problems)} file(s) not scored (above); the mean is over the "
            f"{len(table)} scored",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="dipbench",
        description="Reference benchmark for untrained-network image priors (DIP, Deep Decoder).",
        epilog="Environment: DIPBENCH_DATA (download cache folder), DIPBENCH_MIRROR (a folder or "
        "http(s) base URL laid out as <set>/<file>, replacing the public URLs).",
    )
    parser.add_argument("--version", action="version", version=f"dipbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("datasets", help="list sets and images and whether each is on disk")
    p.add_argument("sets", nargs="*", metavar="SET", help="only these sets")
    p.add_argument("--summary", action="store_true", help="one line per set")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("download", help="fetch and verify images (sha256) into the cache")
    p.add_argument("sets", nargs="*", metavar="SET", help="sets to fetch")
    p.add_argument("--all", action="store_true", help="every file of the registry")
    p.add_argument(
        "--skip-unavailable",
        action="store_true",
        help="exit 0 when a file is only unavailable from the source (404, absent from the "
        "mirror, no network); checksum failures still exit 1",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("list", help="list suites with their grids and cell counts per profile")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run a suite's grid (resumable)")
    p.add_argument("suite", help="a packaged suite name (see dipbench list) or a suite .toml file")
    p.add_argument(
        "--profile",
        default="full",
        choices=["full", "quick", "ci"],
        help="full: the paper's protocol; quick: a 2-core CPU in about an hour for "
        "all suites; ci: a small regression grid (default: full)",
    )
    p.add_argument(
        "--device",
        default="auto",
        type=_device,
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: auto)",
    )
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="local worker processes (default: one per CPU core on the CPU, one per GPU on CUDA)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads per cell (default: 1). Part of a CPU cell's identity: "
        "the numbers do not depend on --jobs, but do change with --threads",
    )
    p.add_argument(
        "--executor",
        default="local",
        choices=["local", "slurm"],
        help="local processes, or one Slurm job array through submitit",
    )
    p.add_argument("--out", type=Path, help="run folder (default: reports/<profile>/<suite>/)")
    _add_allow_suspect(p)
    p.add_argument("--images", nargs="+", metavar="IMAGE", help="only these images")
    p.add_argument("--methods", nargs="+", metavar="METHOD", help="only these methods")
    p.add_argument("--slurm-partition", help="Slurm partition")
    p.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per job (default: 1)")
    p.add_argument("--slurm-time", type=int, default=240, help="time limit per job, minutes")
    p.add_argument(
        "--slurm-array-parallelism",
        type=int,
        default=32,
        help="jobs of the array running at once (default: 32)",
    )
    p.add_argument(
        "--slurm-cluster",
        default=None,
        choices=["slurm", "local", "debug"],
        help="submitit cluster; local/debug run the array on this machine (testing)",
    )
    p.add_argument("--batch", type=_batch, default="auto", help=BATCH_HELP)
    p.add_argument("--no-report", action="store_true", help="skip writing tables and figures")
    p.add_argument(
        "--yes",
        action="store_true",
        help=f"start a run estimated at more than {LONG_RUN_HOURS:g} h without asking",
    )
    _add_method_seed(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="PSNR regression check of results against expected values")
    p.add_argument(
        "results",
        nargs="+",
        type=Path,
        help="results.csv file(s), or folders searched for results.csv",
    )
    p.add_argument("--expected", required=True, type=Path, help="the expected-values CSV")
    p.add_argument(
        "--update",
        action="store_true",
        help="write the expected file from these results (the reference) instead of checking; "
        "needs --variants",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="with --update: run folders of the same grid under other seeds or kernels, whose "
        "deviation from the reference sets each tolerance (see dipbench expect)",
    )
    p.add_argument(
        "--failures-only",
        action="store_true",
        help="list only the cells that are not ok (default: every cell)",
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "expect",
        help="measure a grid's spread over seeds and kernels, write expected values",
        description="Run the grid as the reference and again under variants (method seeds "
        "1..N, ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=default, 2 threads), then write "
        "the expected file: each value's tolerance is a multiple of its measured deviation, "
        "and a value too unstable to gate is listed but not gated.",
    )
    p.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help="packaged suite names or suite .toml files (default: every packaged suite)",
    )
    p.add_argument("--profile", default="ci", choices=["full", "quick", "ci"], help="default: ci")
    p.add_argument("--expected", required=True, type=Path, help="the expected-values CSV to write")
    p.add_argument(
        "--seeds", type=int, default=8, help="method seed streams besides the reference (default 8)"
    )
    p.add_argument(
        "--work",
        type=Path,
        default=Path(".ci-results"),
        help="folder for the runs (default: .ci-results)",
    )
    p.add_argument(
        "--jobs", type=_positive_int, default=None, help="local worker processes per run"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_expect)

    p = sub.add_parser("reproduce", help="run every suite, write the reports and their index")
    p.add_argument("suites", nargs="*", metavar="SUITE", help="only these suites")
    p.add_argument(
        "--profile",
        choices=["full", "quick", "ci"],
        help="default: full on a CUDA GPU, else quick (with an estimate of full)",
    )
    p.add_argument("--device", default="auto", type=_device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--jobs", type=_positive_int, default=None, help="local worker processes")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads per cell")
    p.add_argument("--batch", type=_batch, default="auto", help=BATCH_HELP)
    p.add_argument("--out", type=Path, help="reports folder (default: reports/)")
    _add_allow_suspect(p)
    _add_method_seed(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("report", help="(re)write a run folder's tables and figures from its cells")
    p.add_argument(
        "dir",
        type=Path,
        help="a run folder (reports/<profile>/<suite>), or with --index a reports folder",
    )
    p.add_argument(
        "--index",
        action="store_true",
        help="write DIR/README.md indexing every run folder below DIR",
    )
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("methods", help="list methods, presets and network parameter counts")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser(
        "speed",
        help="measure steps/s (one cell, a batch), conv throughput and suite wall times",
    )
    p.add_argument("--method", default="dip", choices=["dip", "dd"], help="default: dip")
    p.add_argument(
        "--size",
        type=_positive_int,
        default=128,
        help="image side for the one-cell figures (default: 128)",
    )
    p.add_argument(
        "--batch",
        type=_positive_int,
        default=16,
        help="cells fitted together; 1 skips it (default: 16)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        help="image side of the batched cells (default: 32, CIFAR-10's)",
    )
    p.add_argument("--device", default="auto", type=_device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--suite",
        help="take the network and optimisation from this suite's entry for --method "
        "(for example cifar10-noise); default: the method's denoising preset",
    )
    p.add_argument(
        "--profile", default="full", choices=["full", "quick", "ci"], help="with --suite"
    )
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--steps", type=_positive_int, default=10, help="steps per timed block (default: 10)"
    )
    p.add_argument(
        "--repeats",
        type=_positive_int,
        default=5,
        help="timed blocks per variant; the median is shown",
    )
    p.add_argument(
        "--batch-steps",
        type=_positive_int,
        default=100,
        help="steps of each batched cell (default: 100)",
    )
    p.add_argument("--no-estimate", action="store_true", help="skip the suite estimates")
    p.set_defaults(func=cmd_speed)

    p = sub.add_parser("score", help="score restored images made elsewhere (matched by file name)")
    p.add_argument("--gt", required=True, type=Path, help="folder of ground-truth images")
    p.add_argument("--pred", required=True, type=Path, help="folder of restored images")
    p.add_argument(
        "--protocol",
        required=True,
        choices=sorted(metrics.PROTOCOLS),
        help="gray, rgb (whole image) or sr-y (DIP's super-resolution protocol)",
    )
    p.add_argument("--out", type=Path, help="also write the per-image scores to this CSV")
    p.set_defaults(func=cmd_score)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run like Ctrl-C: finished cells are kept


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dipbench`` and ``python -m benchmark``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    pooch.get_logger().setLevel("WARNING")  # our own progress bar and summary say it better
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except UsageError as err:
        parser.exit(EXIT_USAGE, f"dipbench {args.command}: error: {err}\n")
    except KeyboardInterrupt:
        print(
            "interrupted: every finished cell is kept; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:
        # The reader went away (`dipbench list | head`): no traceback; later writes to the
        # closed stdout (at exit) go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
