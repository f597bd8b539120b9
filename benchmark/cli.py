"""The ``dipbench`` command line.

Exit codes: 0 success, 1 a failed check or failed work, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

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


def cmd_score(args: argparse.Namespace) -> int:
    """Score restored images made elsewhere against ground truths, per image and on average."""
    try:
        table, unmatched = metrics.score_folders(args.gt, args.pred, args.protocol)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from err
    if unmatched:
        print(f"not matched (in one folder only): {', '.join(unmatched)}", file=sys.stderr)
    if table.empty:
        print("no image names in common between --gt and --pred", file=sys.stderr)
        return EXIT_FAILED
    shown = pd.concat([table, pd.DataFrame([{"image": "mean", **table[["psnr", "ssim"]].mean()}])])
    print(f"protocol {args.protocol}: {metrics.PROTOCOLS[args.protocol].description}")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
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

    p = sub.add_parser("methods", help="list methods, presets and network parameter counts")
    p.set_defaults(func=cmd_methods)

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dipbench`` and ``python -m benchmark``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    pooch.get_logger().setLevel("WARNING")  # our own progress bar and summary say it better
    try:
        return args.func(args)
    except UsageError as err:
        parser.exit(EXIT_USAGE, f"dipbench {args.command}: error: {err}\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
