"""Whether a process is alive: run folders, claims and restores are held by a process id."""

from __future__ import annotations

import os
from pathlib import Path


def process_is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited.

    A killed process stays in the process table as a zombie until its parent reaps it; an
    orphaned worker waits for PID 1, which can take seconds, and ``kill(pid, 0)`` still
    succeeds on it. Linux's ``/proc`` tells a zombie apart; elsewhere ``kill`` decides.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:  # reaped since, or no /proc on this system
        return not Path("/proc/self/stat").exists()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]  # the command name in (...) may hold spaces
    return state not in ("Z", "X")  # zombie, dead
