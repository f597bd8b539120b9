"""Progress of a run: the grid's bar (cells, running, failed) and one bar per worker."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm import tqdm

from benchmark.runfolder import Record


def grid_bar(total: int, show: bool, costs: Mapping[str, float] | None = None) -> Any:
    """The bar of a run's cells: a tqdm bar on a terminal; in a log file or a pipe, a plain
    line now and then (no carriage returns nor escape sequences).

    ``costs`` (a record key's estimated seconds, from the run's estimate) makes the time left
    the estimate's share of the work still to do, scaled by how fast the done share went: one
    cell of a 36-minute DIP fit and one of a 7-minute Deep Decoder fit are not half each. Without
    it the time left is by cell count."""
    if show and not sys.stderr.isatty():
        return LogLines(total, costs=costs)
    if not costs:
        return tqdm(total=total, desc="cells", unit="cell", disable=not show, dynamic_ncols=True)
    bar = tqdm(
        total=total,
        desc="cells",
        unit="cell",
        disable=not show,
        dynamic_ncols=True,
        # tqdm's own remaining time is by count: the estimate's goes in the postfix
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
    )
    bar.work = Work(costs)
    return bar


class Work:
    """The estimated seconds of a run's cells and of those done, for the time left."""

    def __init__(self, costs: Mapping[str, float] | None) -> None:
        self.costs = dict(costs or {})
        self.total = sum(self.costs.values())
        self.done = 0.0

    def add(self, records: Sequence[Record]) -> None:
        self.done += sum(self.costs.get(r.key, 0.0) for r in records)

    def minutes_left(self, elapsed_minutes: float, n: int, total: int) -> float | None:
        """Minutes left: the estimate's remaining share at the pace measured so far, or by
        cell count where no estimate covers the cells done."""
        if not 0 < n < total:
            return None
        if self.total > 0 and self.done > 0:
            return elapsed_minutes * (self.total - self.done) / self.done
        return elapsed_minutes * (total - n) / n


class LogLines:
    """The part of tqdm's interface a run uses, written as whole lines: one per tenth of the
    work or per ``every_seconds``, whichever comes first, and one at the end, each with the
    time so far and an estimate of the time left."""

    def __init__(
        self,
        total: int,
        every_seconds: float = 60.0,
        unit: str = "cells",
        costs: Mapping[str, float] | None = None,
    ) -> None:
        self.total, self.n, self.every, self.unit = total, 0, every_seconds, unit
        self.work = Work(costs)
        self.postfix = ""
        self.last_time, self.last_n = time.monotonic(), 0
        self.started = self.last_time

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.n += n
        step = max(1, self.total // 10)
        now = time.monotonic()
        if self.n - self.last_n >= step or now - self.last_time >= self.every:
            self._line(now)

    def close(self) -> None:
        if self.n != self.last_n:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        self.last_time, self.last_n = now, self.n
        minutes = (now - self.started) / 60
        extra = f" ({self.postfix})" if self.postfix else ""
        left = self.work.minutes_left(minutes, self.n, self.total)
        if left is not None:
            extra += f", about {left:.1f} min left"
        print(
            f"{self.unit} {self.n}/{self.total} after {minutes:.1f} min{extra}",
            file=sys.stderr,
            flush=True,
        )


def note_failure(record: Record) -> None:
    """Name a failed cell and its error above the bars."""
    if not record.ok:
        tqdm.write(f"failed: {record.cell['image']} {record.cell['method_key']}: {record.error}")


def take(done: list[Record], records: list[Record], bar: tqdm, running: int = 0) -> None:
    """Add a unit's records to the run's, naming its failures and advancing the bar (which
    shows the failed cells so far and, with workers, how many cells are running)."""
    for record in done:
        note_failure(record)
    records += done
    failed = sum(not r.ok for r in records)
    work = getattr(bar, "work", None)
    parts = [f"{running} running" if running else "", f"{failed} failed" if failed else ""]
    if work is not None:
        work.add(done)
        if not isinstance(bar, LogLines):  # a terminal's bar: the estimate's time left
            elapsed = bar.format_dict.get("elapsed", 0.0) / 60
            left = work.minutes_left(elapsed, bar.n + len(done), bar.total)
            parts.append(f"about {left:.1f} min left" if left is not None else "")
    postfix = ", ".join(part for part in parts if part)
    bar.set_postfix_str(postfix, refresh=False)
    bar.update(len(done))


class WorkerBars:
    """One iteration bar per worker under the grid's bar, fed from the shared array (only on a
    terminal: a log gets the grid's bar alone)."""

    def __init__(self, slots: int, shared: Any, *, show: bool) -> None:
        self.shared = shared
        self.bars = (
            [
                tqdm(desc=f"  worker {i + 1}", unit="it", position=i + 1, leave=False)
                for i in range(slots)
            ]
            if show
            else []
        )

    def refresh(self) -> None:
        for i, inner in enumerate(self.bars):
            done, total = self.shared[2 * i], self.shared[2 * i + 1]
            if not total:
                continue
            if inner.total != total or done < inner.n:  # the worker started another cell
                inner.reset(total=total)
            inner.update(done - inner.n)

    def close(self) -> None:
        for inner in self.bars:
            inner.close()
