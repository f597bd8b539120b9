"""Commands that run suites and report them: ``run``, ``reproduce``, ``report``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from benchmark.cli.options import EXIT_FAILED, EXIT_OK, LONG_RUN_HOURS, UsageError


def _load_suite(args: argparse.Namespace) -> Any:
    from benchmark.suites import SuiteError, load_suite

    try:
        return load_suite(
            args.suite,
            args.profile,
            images_subset=args.images,
            methods_subset=args.methods,
            levels_subset=getattr(args, "levels", None),
            method_seed=args.method_seed,
        )
    except SuiteError as err:
        raise UsageError(str(err)) from err


def _confirm_long_run(
    suite: Any, todo: Sequence[Any], args: argparse.Namespace, jobs: int
) -> list[float] | None:
    """Print a network run's estimated time; one over ``LONG_RUN_HOURS`` starts only after
    ``--yes`` or a "y" typed at a terminal. The ci profile (a few minutes) is not estimated.
    Returns each unit's estimated seconds (the progress weighs cells by them), or None."""
    from benchmark.methods import get_method
    from benchmark.runner.estimate import estimate

    if suite.profile == "ci" or not any(get_method(c.method).fits_network for c in todo):
        return None
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # as each cell will run
    try:
        measured = estimate(todo, args.device, args.batch)
    except (ValueError, RuntimeError) as err:  # e.g. a network the image cannot take
        print(f"no estimate: a cell cannot run ({err}); its cells will fail with that reason")
        return None
    finally:
        torch.set_num_threads(previous)
    hours = measured.wall(jobs) / 3600
    shown = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
    print(
        f"estimated time: about {shown} with {jobs} job(s) on {args.device} (steps measured "
        f"at each of the run's {len(measured.parts)} shapes, summed)"
    )
    if hours <= LONG_RUN_HOURS or args.yes:
        return measured.units
    if sys.stdin.isatty():
        if input("start it? [y/N] ").strip().lower() in ("y", "yes"):
            return measured.units
        raise UsageError("not started")
    raise UsageError(
        f"this run needs about {hours:.1f} h here: add --yes to start it, or use "
        "--profile quick (a 2-core CPU finishes every quick suite in about an hour)"
    )


GRID_LIMIT = 20_000  # cells; the largest packaged grid has 1280


def check_grid_size(suite: Any, *, confirmed: bool) -> None:
    """Refuse, before anything is planned, a grid far larger than any benchmark's (levels or
    repetitions by the thousand are a typo far more often than a plan) unless confirmed."""
    count = suite.cell_count()
    if count > GRID_LIMIT and not confirmed:
        raise UsageError(
            f"suite {suite.name!r} ({suite.profile}) has {count:,} cells (images x levels x "
            f"repetitions x methods), more than {GRID_LIMIT:,}: check its levels and "
            "repetitions, or add --yes to plan them all"
        )


def _default_profile(args: argparse.Namespace) -> str:
    """``--profile`` when given, else full on a CUDA GPU and quick elsewhere (said once)."""
    if args.profile:
        return args.profile
    from benchmark.device import resolve_device

    device = resolve_device(args.device)
    profile = "full" if device.type == "cuda" else "quick"
    why = "a CUDA GPU" if profile == "full" else f"no CUDA GPU here ({device})"
    print(f"profile {profile}: {why}; --profile full|quick|ci chooses another")
    return profile


def _check_images(cells: Sequence[Any]) -> None:
    """Fetch every image the cells need before any work; what cannot be had is one message
    naming the download command (exit 2), and no run folder is written."""
    from benchmark.runner import fetch_images_of

    missing = fetch_images_of(cells)
    if missing:
        sets = " ".join(sorted(missing))
        first = next(iter(missing.values()))
        raise UsageError(
            f"images not available here: {', '.join(sorted(missing))} ({first}). Run "
            f"`dipbench download {sets}` where the internet is reachable, or set "
            "DIPBENCH_MIRROR to a folder laid out as <set>/<file>"
        )


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) a suite's grid; failed cells are listed and make the exit code 1."""
    from benchmark import runner

    args.profile = _default_profile(args)
    suite = _load_suite(args)
    out = args.out or runner.default_out(suite.profile, suite.name)
    check_grid_size(suite, confirmed=args.yes)
    cells = suite.cells()
    if not cells:
        raise UsageError(
            f"suite {suite.name!r} ({suite.profile}) has no cell: its methods run on none of its "
            "degradations, or the selection removed them all"
        )
    _check_images(cells)
    jobs = args.jobs if args.jobs is not None else runner.default_jobs(args.device)
    try:  # before any estimate or cell: the folder must be this run's to write
        from benchmark.runner.manifest import check_same_run, read_manifest

        check_same_run(read_manifest(out), suite, out, args.threads)
    except runner.RunFolderError as err:
        raise UsageError(str(err)) from err
    found = runner.stale(cells, out, args.device, args.threads)
    if found:
        print(runner.stale_summary(found, args.reuse_stale))
    todo = runner.pending(cells, out, args.device, args.threads, reuse_stale=args.reuse_stale)
    print(
        f"{suite.name} ({suite.profile}): {len(cells)} cells, {len(cells) - len(todo)} already "
        f"done, {len(todo)} to run -> {out}"
    )
    unit_seconds = _confirm_long_run(suite, todo, args, jobs)
    slurm = {
        "partition": args.slurm_partition,
        "gpus": args.slurm_gpus,
        "time_min": args.slurm_time,
        "array_parallelism": args.slurm_array_parallelism,
        "cluster": args.slurm_cluster,
    }
    outcome = runner.run_and_report(
        suite,
        out,
        write_report=not args.no_report,
        device=args.device,
        jobs=jobs,
        threads=args.threads,
        executor=args.executor,
        slurm=slurm,
        show_progress=not args.quiet,
        batch=args.batch,
        reuse_stale=args.reuse_stale,
        cell_timeout=args.cell_timeout,
        unit_seconds=unit_seconds,
    )
    print(f"wrote {out / 'results.csv'} ({len(outcome.table)} rows)")
    elsewhere = runner.claimed_elsewhere(cells, out, args.device, args.threads)
    if elsewhere:
        print(
            f"{len(elsewhere)} cell(s) are being computed by another run on this folder (their "
            "lock files in cells/); run the same command again when it ends to collect them"
        )
    if not args.no_report:
        print(f"wrote {out / 'table.md'} and figures")
    suspect = _print_suspects(outcome.suspects)
    if outcome.failed:
        print(f"{len(outcome.failed)} failed cell(s):", file=sys.stderr)
        for line in outcome.failed:
            print(f"  {line}", file=sys.stderr)
        return EXIT_FAILED
    if _refuse_suspects(suspect, suite.profile, args.allow_suspect):
        return EXIT_FAILED
    if suspect:  # the last line, where a script's log ends
        print(
            f"{len(suspect)} suspect cell(s): their numbers look impossible (listed above, "
            "‡ in the tables)",
            file=sys.stderr,
        )
    return EXIT_OK


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


def _print_suspects(lines: list[str]) -> list[str]:
    """Print the suspect cells of a run (numbers that look impossible) and return them."""
    if lines:
        print(f"{len(lines)} suspect cell(s) (marked ‡ in the tables):", file=sys.stderr)
        for line in lines:
            print(f"  suspect: {line}", file=sys.stderr)
    return lines


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run every suite (the paper protocol on a CUDA GPU, else quick), report, index."""
    from benchmark import images, runner
    from benchmark.device import resolve_device
    from benchmark.suites import SuiteError, load_suite, packaged_suites

    device = resolve_device(args.device)
    profile = args.profile or ("full" if device.type == "cuda" else "quick")
    names = args.suites or packaged_suites()
    try:
        suites = [load_suite(name, profile, method_seed=args.method_seed) for name in names]
    except SuiteError as err:
        raise UsageError(str(err)) from err
    if args.profile is None and profile != "full":
        print(
            f"No CUDA GPU here (device {device}): running the quick profile, which is NOT the "
            "papers' protocol (PROFILE=full forces the full one). Estimating both per suite "
            "(one step per network at 128x128, scaled by pixels)...",
            flush=True,
        )
        _print_estimates(names, suites, args.device, args.jobs)
    root = args.out or runner.default_out(profile, "x").parent.parent
    from benchmark import report

    try:
        report.check_index_writable(root)  # before hours of work, not after
    except FileExistsError as err:
        raise UsageError(str(err)) from err
    print(f"run folders go to {root}/{profile}/; dipbench publish copies them into reports/")
    done = runner.reproduce(
        suites,
        root,
        device=args.device,
        jobs=args.jobs if args.jobs is not None else runner.default_jobs(args.device),
        threads=args.threads,
        show_progress=not args.quiet,
        batch=args.batch,
        reuse_stale=args.reuse_stale,
        cell_timeout=args.cell_timeout,
    )
    _print_suspects(done.suspects)
    if done.index is None:
        print(
            "no suite could run: the images of every suite are unavailable here. "
            + images.MIRROR_HINT,
            file=sys.stderr,
        )
        return EXIT_FAILED
    for line in done.failed:
        print(f"failed cell: {line}", file=sys.stderr)
    if done.skipped:
        print(f"skipped suite(s): {', '.join(done.skipped)} (see above)")
    print(f"index of the reports: {done.index}")
    if _refuse_suspects(done.suspects, profile, args.allow_suspect):
        return EXIT_FAILED
    return EXIT_FAILED if done.failed else EXIT_OK


def human_duration(seconds: float) -> str:
    """``"40 min"``, ``"3.2 h"``, ``"11,366 h (about 1.3 years)"``: hours, with days, months or
    years beside a long one."""
    hours = seconds / 3600
    if hours < 1:
        return f"{max(1, round(seconds / 60))} min"
    if hours < 48:
        return f"{hours:.1f} h"
    days = hours / 24
    if days < 60:
        return f"{hours:,.0f} h (about {days:.0f} days)"
    if days < 730:
        return f"{hours:,.0f} h (about {days / 30.4:.0f} months)"
    return f"{hours:,.0f} h (about {days / 365:.1f} years)"


def _print_estimates(
    names: Sequence[str], suites: Sequence[Any], device: str, jobs: int | None
) -> None:
    """A table of each suite's rough time: the quick run that starts now and the full one
    here, and the full one on one H100 (modelled from the steps measured there)."""
    from benchmark import runner
    from benchmark.device import resolve_device
    from benchmark.runner.estimate import estimate, h100_model, scaled_from_one_size
    from benchmark.suites import load_suite

    step, cell = scaled_from_one_size(device)
    gpu_step, gpu_cell = h100_model()
    workers = jobs if jobs is not None else runner.default_jobs(device)
    print(f"  {'suite':<20} {'quick (this run)':>18}  {'full here':<26}  full on one H100")
    totals = [0.0, 0.0, 0.0]
    for name, suite in zip(names, suites, strict=True):
        full_cells = load_suite(name, "full").cells()
        times = (
            estimate(suite.cells(), device, step=step, cell=cell).wall(workers),
            estimate(full_cells, device, step=step, cell=cell).wall(workers),
            estimate(full_cells, "cpu", step=gpu_step, cell=gpu_cell).wall(1),
        )
        totals = [total + time for total, time in zip(totals, times, strict=True)]
        _print_estimate_row(name, times)
    _print_estimate_row("all", totals)
    print(
        f"  (here: {workers} worker(s) on {resolve_device(device)}, one step per network "
        "timed at 128x128 and scaled by pixels; H100: one process, from the steps measured "
        "on one (docs/speed.md); rough: a run measures its own estimate)"
    )


def _print_estimate_row(name: str, seconds: Sequence[float]) -> None:
    quick, full, gpu = (human_duration(s) for s in seconds)
    print(f"  {name:<20} {quick:>18}  {full:<26}  {gpu}")


def cmd_report(args: argparse.Namespace) -> int:
    """(Re)write a run folder's tables and figures from its cells; --index for a tree."""
    from benchmark import report

    if args.index:
        try:
            print(f"wrote {report.write_index(args.dir)}")
        except (FileNotFoundError, FileExistsError) as err:
            print(f"dipbench report: {err}", file=sys.stderr)
            return EXIT_FAILED
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


def cmd_rescore(args: argparse.Namespace) -> int:
    """Add metrics to a run folder from its cells' saved outputs."""
    from benchmark.rescore import rescore

    try:
        done = rescore(args.dir, args.metrics, quiet=args.quiet)
    except ValueError as err:
        raise UsageError(str(err)) from err
    except RuntimeError as err:  # a metric that cannot run here (LPIPS without its weights)
        print(f"dipbench rescore: {err}", file=sys.stderr)
        return EXIT_FAILED
    for line in done.skipped:
        print(f"not rescored: {line}", file=sys.stderr)
    print(
        f"rescored {done.scored} cell(s) with {', '.join(args.metrics)}; {done.current} "
        f"already current, {len(done.skipped)} left alone; results.csv and tables rewritten"
    )
    return EXIT_FAILED if done.skipped else EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    """Copy complete runs' reports into the reports folder and rewrite its index."""
    from benchmark import report
    from benchmark.report.publish import PublishError, publish

    refused = 0
    for run in args.runs:
        try:
            target = publish(run, args.reports, replace=args.replace)
        except FileNotFoundError as err:
            print(f"dipbench publish: {err}", file=sys.stderr)
            refused += 1
        except PublishError as err:
            print(f"dipbench publish: {err}", file=sys.stderr)
            refused += 1
        else:
            print(f"published {run} -> {target}")
    if refused < len(args.runs):
        try:
            print(f"wrote {report.write_index(args.reports)}")
        except FileExistsError as err:
            print(f"dipbench publish: {err}", file=sys.stderr)
            refused += 1
    return EXIT_FAILED if refused else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """A report's numbers as parquet, JSON or LaTeX (benchmark.report.export)."""
    from benchmark.report.export import export

    try:
        written = export(args.dir, args.format, args.out)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    except ImportError as err:
        print(f"dipbench export: {err}", file=sys.stderr)
        return EXIT_FAILED
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK
