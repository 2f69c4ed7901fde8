"""Who holds a claim in the results store, and whether that process still exists.

An owner is ``host:pid:start``, ``start`` being the process's start time in clock ticks after boot
(``/proc/PID/stat``, field 22; empty where there is no /proc). A pid alone is not enough: after a
restart, or on a busy machine, the pid of a crashed sweep comes back as some other process, and a
claim that trusted it would wait for a process that is not computing anything. The start time
tells the two apart. Claims written before start times were recorded (``host:pid``) are held only
by a live process whose command line names python or bnlab.
"""

from __future__ import annotations

import os
import socket


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except (OSError, ValueError):
        return None


def _start_ticks(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def this_process() -> str:
    """This process as an owner string."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def parse(owner: str) -> tuple[str, int | None, str | None]:
    """``(host, pid, start)``; start None for an owner recorded without it, pid None if unreadable."""
    host, _, rest = owner.partition(":")
    pid_text, sep, start = rest.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        pid = None
    return host, pid, (start if sep else None)


def gone(owner: str | None) -> str | None:
    """Why the process ``owner`` can no longer be computing anything, or None if it may be.

    A process on another host cannot be checked from here: it counts as alive (the store's lease
    bounds how long its claim holds).
    """
    if not owner:
        return "no owner recorded"
    host, pid, start = parse(owner)
    if host != socket.gethostname():
        return None
    if pid is None:
        return f"unreadable owner {owner!r}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "that process has exited"
    except PermissionError:
        pass  # exists, another user's
    fields = _stat(pid)
    if fields is None:
        return None if not os.path.isdir("/proc") else "that process has exited"
    if fields[0] == "Z":  # killed, waiting to be reaped
        return "that process has exited"
    if start is not None:
        if start and len(fields) > 19 and fields[19] != start:
            return f"pid {pid} now belongs to another process (started later)"
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "python" in cmdline or "bnlab" in cmdline:
        return None
    return f"pid {pid} now belongs to another program ({cmdline.strip()[:60] or '?'})"
