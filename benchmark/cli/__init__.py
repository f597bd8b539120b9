"""The ``dipbench`` command line: a thin shell over the library.

Exit codes: 0 success, 1 a failed check or failed work, 2 bad usage. Commands live in
:mod:`~benchmark.cli.data`, :mod:`~benchmark.cli.runs` and :mod:`~benchmark.cli.measure`; each
imports what it needs when it runs, so ``dipbench --help`` answers without loading torch.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from benchmark.cli.options import EXIT_USAGE, UsageError
from benchmark.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run like Ctrl-C: finished cells are kept


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dipbench`` and ``python -m benchmark``."""
    for stream in (sys.stdout, sys.stderr):  # an ASCII locale (LC_ALL=C) shows "?" for "†"
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower() != "utf-8":
            stream.reconfigure(errors="replace")
    parser = build_parser()
    args = parser.parse_args(argv)
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
    except OSError as err:  # a full disk, a read-only folder: what the system said, no trace
        where = f" {err.filename}" if err.filename else ""
        print(
            f"dipbench {args.command}: cannot go on:{where}: {err.strerror or err}; every "
            "finished cell is kept",
            file=sys.stderr,
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
