"""Progress of a run: the grid's bar (cells, running, failed) and one bar per worker."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def grid_bar(total: int, show: bool) -> tqdm:
    """The bar of a run's cells."""
    return tqdm(total=total, desc="cells", unit="cell", disable=not show, dynamic_ncols=True)


def note_failure(record: dict[str, Any]) -> None:
    """Name a failed cell and its error above the bars."""
    if record.get("status") != "ok":
        tqdm.write(
            f"failed: {record['cell']['image']} {record['cell']['method_key']}: "
            f"{record.get('error')}"
        )


def take(
    done: list[dict[str, Any]], records: list[dict[str, Any]], bar: tqdm, running: int = 0
) -> None:
    """Add a unit's records to the run's, naming its failures and advancing the bar (which
    shows the failed cells so far and, with workers, how many cells are running)."""
    for record in done:
        note_failure(record)
    records += done
    failed = sum(r.get("status") != "ok" for r in records)
    bar.set_postfix_str(
        ", ".join(
            part
            for part in (
                f"{running} running" if running else "",
                f"{failed} failed" if failed else "",
            )
            if part
        ),
        refresh=False,
    )
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
