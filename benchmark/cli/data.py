"""Commands about data and methods: ``datasets``, ``download``, ``list``, ``methods``,
``score``. Heavy imports wait until a command runs, so ``--help`` answers at once."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from benchmark.cli.options import EXIT_FAILED, EXIT_OK, UsageError


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _selected(args: argparse.Namespace, registry: list[Any]) -> list[Any]:
    from benchmark import images

    if not args.sets:
        return registry
    try:
        return images.select(registry, args.sets)
    except KeyError as err:
        raise UsageError(err.args[0]) from err


def cmd_datasets(args: argparse.Namespace) -> int:
    """List sets and images and whether each is on disk."""
    from benchmark import images
    from benchmark.datasets import DatasetError, registry_of

    try:
        registry = registry_of(args.registry)
    except DatasetError as err:
        raise UsageError(str(err)) from None
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


def cmd_add_dataset(args: argparse.Namespace) -> int:
    """Append a folder's images to a user's registry file as one set."""
    import pandas as pd

    from benchmark.datasets import DatasetError, folder_rows, packaged_sets, user_entries
    from benchmark.runfolder import atomic_write

    if not args.set.replace("-", "_").isidentifier():
        raise UsageError(f"set name {args.set!r}: use letters, digits, - and _")
    if args.set in packaged_sets():
        raise UsageError(f"{args.set} is a packaged set; give yours a name of its own")
    if not args.folder.is_dir():
        raise UsageError(f"{args.folder} is not a folder")
    try:
        known = user_entries(args.registry) if args.registry.exists() else []
        if args.set in {e.set for e in known}:
            raise DatasetError(f"{args.registry} has a set {args.set} already; choose another name")
        rows = folder_rows(args.folder, args.set, args.registry)
    except DatasetError as err:
        raise UsageError(str(err)) from None
    table = rows
    if args.registry.exists():
        table = pd.concat([pd.read_csv(args.registry, dtype=str, keep_default_na=False), rows])
    atomic_write(args.registry, lambda p: table.to_csv(p, index=False))
    print(f"{args.registry}: set {args.set}, {len(rows)} image(s) added")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    """Fetch and verify files; report what was downloaded, cached, replaced or failed."""
    import pooch
    from tqdm import tqdm

    from benchmark import images

    pooch.get_logger().setLevel("WARNING")  # our own progress bar and summary say it better
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


def cmd_list(args: argparse.Namespace) -> int:
    """Suites with their grids and cell counts per profile (packaged ones, or those named)."""
    from benchmark.suites import PROFILES, SuiteError, load_suite, packaged_suites

    # The packaged suites' methods are checked by the tests; reading only their grids keeps
    # the methods' code (and torch) out of this command. A suite named here is checked whole.
    check = bool(args.suites)
    for name in args.suites or packaged_suites():
        try:
            suites = {p: load_suite(name, p, check_methods=check) for p in PROFILES}
        except SuiteError as err:
            raise UsageError(str(err)) from err
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
                f"    {profile:<6} {suite.cell_count():>5} cells: {len(suite.images)} images "
                f"({crop}) x {degradations} x {len(suite.methods)} methods "
                f"({', '.join(m.key for m in suite.methods)})"
            )
    return EXIT_OK


def cmd_methods(args: argparse.Namespace) -> int:
    """Every method, its tasks, and for the networks each preset with its parameter counts."""
    import torch

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


def cmd_metrics(args: argparse.Namespace) -> int:
    """Every metric: built in (computed with every cell) or added later by ``rescore``."""
    from benchmark.scoring import BUILT_IN, describe, get_metric, known_metrics

    for name in known_metrics():
        row = describe(get_metric(name))
        when = "every cell" if name in BUILT_IN else "dipbench rescore"
        print(f"{name:<8} {row['better']:<7} {when:<17} {row['library']:<13} {row['description']}")
    print("(or your own: package.module:function, f(output, reference) -> float)")
    return EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    """Score restored images made elsewhere against ground truths, per image and on average.

    Every pair that can be scored is; each file that cannot, and each file without its pair
    in the other folder, is named on its own line, and the exit code is then 1 (unless
    ``--allow-subset`` accepts unmatched files).
    """
    import pandas as pd

    from benchmark import metrics, score_files
    from benchmark.runfolder import atomic_write

    try:
        protocol = metrics.get_protocol(args.protocol)
    except KeyError as err:
        raise UsageError(err.args[0]) from err
    if args.out and not args.out.parent.is_dir():
        raise UsageError(f"--out {args.out}: the folder {args.out.parent} does not exist")
    for folder in (args.gt, args.pred):
        if args.out and args.out.resolve().is_relative_to(folder.resolve()):
            raise UsageError(
                f"--out {args.out} is inside the input folder {folder}: the scores would "
                "overwrite or join the images; write them elsewhere"
            )
    try:
        found = score_files.score_folders(args.gt, args.pred, args.protocol)
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
    print(f"protocol {args.protocol}: {protocol.description}")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        atomic_write(args.out, lambda p: table.to_csv(p, index=False))
        print(f"wrote {args.out}")
    if found.problems or (found.unmatched and not args.allow_subset):
        print(
            f"{len(found.problems)} file(s) not scored and {len(found.unmatched)} without a "
            f"pair (above): the mean is over the {len(table)} scored only"
            + ("" if found.problems else "; --allow-subset accepts a subset"),
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK
