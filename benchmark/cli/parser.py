"""The argument parser: every sub-command, with the option groups they share defined once
(:mod:`benchmark.cli.options`). Building it imports no command module's dependencies."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark import __version__
from benchmark.cli import data, measure, restore, runs
from benchmark.cli.options import (
    LONG_RUN_HOURS,
    PROFILE_HELP,
    PROFILES,
    compute_options,
    device,
    method_option,
    positive_int,
    quiet_options,
)


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
    quiet, compute = quiet_options(), compute_options()
    _data_commands(sub, quiet)
    _run_commands(sub, quiet, compute)
    restore.add_parser(sub, quiet)
    _measure_commands(sub, quiet)
    return parser


def _data_commands(sub: argparse._SubParsersAction, quiet: argparse.ArgumentParser) -> None:
    p = sub.add_parser("datasets", help="list sets and images and whether each is on disk")
    p.add_argument("sets", nargs="*", metavar="SET", help="only these sets")
    p.add_argument("--summary", action="store_true", help="one line per set")
    p.add_argument(
        "--registry", type=Path, metavar="FILE", help="also the sets of your registry file"
    )
    p.set_defaults(func=data.cmd_datasets)

    p = sub.add_parser(
        "add-dataset",
        help="add a folder of your images as a set of your registry file (a suite names it)",
        description="Write one registry row per image of FOLDER (size, mode, sha256 of the "
        "bytes and of the decoded pixels, its path relative to FILE) as set SET, appended to "
        'FILE (created if absent). A suite then says registry = "FILE" and datasets = '
        '"SET"; its images are verified against these checksums whenever they are read.',
    )
    p.add_argument("set", metavar="SET", help="the new set's name (not a packaged set's)")
    p.add_argument("folder", type=Path, metavar="FOLDER", help="a folder of image files")
    p.add_argument("--registry", type=Path, required=True, metavar="FILE", help="a CSV file")
    p.set_defaults(func=data.cmd_add_dataset)

    p = sub.add_parser(
        "download", parents=[quiet], help="fetch and verify images (sha256) into the cache"
    )
    p.add_argument("sets", nargs="*", metavar="SET", help="sets to fetch")
    p.add_argument("--all", action="store_true", help="every file of the registry")
    p.add_argument(
        "--skip-unavailable",
        action="store_true",
        help="exit 0 when a file is only unavailable from the source (404, absent from the "
        "mirror, no network); checksum failures still exit 1",
    )
    p.set_defaults(func=data.cmd_download)

    p = sub.add_parser("list", help="list suites with their grids and cell counts per profile")
    p.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help="packaged suite names or suite .toml files (default: every packaged suite)",
    )
    p.set_defaults(func=data.cmd_list)

    p = sub.add_parser("methods", help="list methods, presets and network parameter counts")
    p.set_defaults(func=data.cmd_methods)

    p = sub.add_parser("metrics", help="list the metrics results can be scored with")
    p.set_defaults(func=data.cmd_metrics)

    p = sub.add_parser("score", help="score restored images made elsewhere (matched by file name)")
    p.add_argument("--gt", required=True, type=Path, help="folder of ground-truth images")
    p.add_argument("--pred", required=True, type=Path, help="folder of restored images")
    p.add_argument(
        "--protocol",
        required=True,
        metavar="{gray,rgb,sr-y}",
        help="gray, rgb (whole image) or sr-y (DIP's super-resolution protocol)",
    )
    p.add_argument("--out", type=Path, help="also write the per-image scores to this CSV")
    p.add_argument(
        "--allow-subset",
        action="store_true",
        help="exit 0 when some files have no pair in the other folder (the mean is then over "
        "the matched pairs only)",
    )
    p.set_defaults(func=data.cmd_score)


def _run_commands(
    sub: argparse._SubParsersAction,
    quiet: argparse.ArgumentParser,
    compute: argparse.ArgumentParser,
) -> None:
    p = sub.add_parser("run", parents=[compute, quiet], help="run a suite's grid (resumable)")
    p.add_argument("suite", help="a packaged suite name (see dipbench list) or a suite .toml file")
    p.add_argument(
        "--profile",
        choices=PROFILES,
        help=f"{PROFILE_HELP} (default: full on a CUDA GPU, else quick, as reproduce)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="run folder (default: runs/<profile>/<suite>/ in the current folder; "
        "dipbench publish copies a complete run into the committed reports)",
    )
    p.add_argument("--images", nargs="+", metavar="IMAGE", help="only these images")
    p.add_argument("--methods", nargs="+", metavar="METHOD", help="only these methods")
    p.add_argument(
        "--levels",
        nargs="+",
        metavar="LEVEL",
        help="only these degradation levels (e.g. 30 for sigma 30, 4 for x4); KIND:LEVEL for "
        "one degradation's level where two share it (poisson_counts:50)",
    )
    p.add_argument("--no-report", action="store_true", help="skip writing tables and figures")
    p.add_argument(
        "--yes",
        action="store_true",
        help=f"start a run estimated at more than {LONG_RUN_HOURS:g} h without asking, or one "
        "of more than 20,000 cells",
    )
    slurm = p.add_argument_group("executor")
    slurm.add_argument(
        "--executor",
        default="local",
        choices=["local", "inline", "slurm"],
        help="local: isolated worker processes (default); inline: this process, without "
        "isolation (for a debugger); slurm: one Slurm job array through submitit",
    )
    slurm.add_argument("--slurm-partition", help="Slurm partition")
    slurm.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per job (default: 1)")
    slurm.add_argument("--slurm-time", type=int, default=240, help="time limit per job, minutes")
    slurm.add_argument(
        "--slurm-array-parallelism",
        type=int,
        default=32,
        help="jobs of the array running at once (default: 32)",
    )
    slurm.add_argument(
        "--slurm-cluster",
        default=None,
        choices=["slurm", "local", "debug"],
        help="submitit cluster; local/debug run the array on this machine (testing)",
    )
    p.set_defaults(func=runs.cmd_run)

    p = sub.add_parser(
        "reproduce",
        parents=[compute, quiet],
        help="run every suite, write the reports and their index",
    )
    p.add_argument("suites", nargs="*", metavar="SUITE", help="only these suites")
    p.add_argument(
        "--profile",
        choices=PROFILES,
        help=f"{PROFILE_HELP} (default: full on a CUDA GPU, else quick, with an estimate of full)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="folder of the run folders and their index (default: runs/ in the current folder)",
    )
    p.set_defaults(func=runs.cmd_reproduce)

    p = sub.add_parser("report", help="(re)write a run folder's tables and figures from its cells")
    p.add_argument(
        "dir",
        type=Path,
        help="a run folder (runs/<profile>/<suite>), or with --index a folder of run folders",
    )
    p.add_argument(
        "--index",
        action="store_true",
        help="write DIR/README.md indexing every run folder below DIR",
    )
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.set_defaults(func=runs.cmd_report)

    p = sub.add_parser(
        "export",
        help="a report's numbers as parquet, JSON (one row per cell, output and metric) or LaTeX",
    )
    p.add_argument("dir", type=Path, help="a run folder with its report, or a published report")
    p.add_argument(
        "--format",
        nargs="+",
        default=["json", "latex"],
        choices=["parquet", "json", "latex"],
        help="default: json latex (parquet needs pyarrow)",
    )
    p.add_argument("--out", type=Path, help="folder to write into (default: DIR/export)")
    p.set_defaults(func=runs.cmd_export)

    p = sub.add_parser(
        "rescore",
        parents=[quiet],
        help="add a metric to a run folder from its cells' saved outputs (no fit again)",
        description="Score every finished cell of a run folder with more metrics (LPIPS, or "
        "your own package.module:function) from the outputs it saved, losslessly, when it "
        "was computed; the values join its records, results.csv and tables. Cells already "
        "scored by the current code of a metric are left as they are.",
    )
    p.add_argument("dir", type=Path, help="a run folder (runs/<profile>/<suite>)")
    p.add_argument(
        "--metrics",
        nargs="+",
        required=True,
        metavar="METRIC",
        help="metrics to add: a name of `dipbench metrics`, or package.module:function",
    )
    p.set_defaults(func=runs.cmd_rescore)

    p = sub.add_parser(
        "publish",
        help="merge complete runs into the committed reports",
        description="Merge the cells of each complete run folder (every cell of its grid "
        "successful and computed by the current code) into the report REPORTS/<profile>/<suite>: "
        "they are added, or replace the same cells there, and the report's tables, figures, "
        "results.csv and kept records (records/) are rebuilt from the union; then rewrite "
        "REPORTS/README.md. The one step that changes committed reports. Refused, with nothing "
        "written: a target that is not a published report (a run folder, a user's folder), a "
        "publish that would leave cells of other code or library versions beside the run's, "
        "drop cells of a report that keeps no records, or map its methods elsewhere (unless "
        "--replace).",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace the report with the run whole, even where that drops cells of the "
        "report or defines its methods otherwise (what is dropped is said)",
    )
    p.add_argument(
        "--reports",
        type=Path,
        default=Path("reports"),
        help="the reports folder (default: reports/ in the current folder)",
    )
    p.set_defaults(func=runs.cmd_publish)


def _measure_commands(sub: argparse._SubParsersAction, quiet: argparse.ArgumentParser) -> None:
    p = sub.add_parser("compare", help="paired differences of a run's rows against a baseline")
    p.add_argument("dir", type=Path, help="a run folder or a published report")
    p.add_argument("--baseline", required=True, help="METHOD or METHOD/OUTPUT (a suite key)")
    p.add_argument("--metric", default="psnr", help="a results.csv metric column (default psnr)")
    p.add_argument("--csv", type=Path, help="also write the table to this CSV file")
    p.set_defaults(func=measure.cmd_compare)

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
    p.add_argument(
        "--allow-new",
        action="store_true",
        help="pass results of a suite the expected file does not know (default: such values "
        "read 'unchecked' and fail the check, which could not have failed on them)",
    )
    p.add_argument(
        "--suites",
        nargs="+",
        metavar="SUITE",
        help="check only these suites' values (default: every suite of the expected file; "
        "one the results have no cell of then fails the check as missing)",
    )
    p.set_defaults(func=measure.cmd_check)

    p = sub.add_parser(
        "expect",
        parents=[quiet],
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
    p.add_argument("--profile", default="ci", choices=PROFILES, help="default: ci")
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
    p.add_argument("--jobs", type=positive_int, default=None, help="local worker processes per run")
    p.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help="measure only these methods' cells (the suites' method keys, e.g. your own): the "
        "expected file's values of the other methods are kept as they are",
    )
    p.set_defaults(func=measure.cmd_expect)

    p = sub.add_parser(
        "speed",
        help="measure steps/s (one cell, a batch), conv throughput and suite wall times",
    )
    p.add_argument(
        "--method",
        default="dip",
        help="a network method: dip (default), dd, or your own as module:function (measured "
        "through its contract: one step of one cell, and of a batch if it batches)",
    )
    p.add_argument(
        "--size", type=positive_int, default=128, help="image side for the one-cell figures"
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=16,
        help="cells fitted together; 1 skips it (default: 16)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="image side of the batched cells (default: 32, CIFAR-10's)",
    )
    p.add_argument("--device", default="auto", type=device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--suite",
        help="take the network and optimisation from this suite's entry for --method "
        "(for example cifar10-noise); default: the method's denoising preset",
    )
    p.add_argument("--profile", default="full", choices=PROFILES, help="with --suite")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--steps", type=positive_int, default=10, help="steps per timed block (default: 10)"
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=5,
        help="timed blocks per variant; the median is shown",
    )
    p.add_argument(
        "--batch-steps",
        type=positive_int,
        default=100,
        help="steps of each batched cell (default: 100)",
    )
    p.add_argument("--no-estimate", action="store_true", help="skip the suite estimates")
    p.add_argument(
        "--option",
        action="append",
        type=method_option,
        metavar="KEY=VALUE",
        help="an option of a network method that fits its own loop (not configured by "
        "presets), as a suite gives it; repeat for more",
    )
    p.set_defaults(func=measure.cmd_speed)
