"""Kill whole process trees of the integration stack, including processes that left their group.

Why not just ``os.killpg``: Airflow 3's task supervisor puts every task process into a
process group of its own (``setpgid(0, 0)`` after the fork, so that it can signal the task's
own children). Killing a Celery worker's process group therefore leaves its running task
processes alive as orphans: they would keep writing the release while the retry rebuilds it,
and they would outlive the test. So every process the stack starts carries a marker
environment variable (inherited by every fork), and cleanup

1. snapshots the tree (``psutil`` children, recursively) before signalling anything,
2. signals each distinct process group in the tree and each process, and
3. sweeps every process that still carries the marker (orphans re-parented to init).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil

#: The environment variable that tags every process of one stack (value: a random token).
MARK = "HDP_IT_STACK_TOKEN"
#: The pid of the test process that owns the stack (to find stacks whose test was killed).
OWNER = "HDP_IT_OWNER_PID"


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def marked(token: str) -> list[psutil.Process]:
    """Every live process whose environment carries ``MARK=token``."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARK) == token and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def signal_all(procs: list[psutil.Process], sig: signal.Signals) -> None:
    """Send ``sig`` to each process group of ``procs`` (never our own) and to each process."""
    own = os.getpgid(0)
    groups = set()
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            groups.add(os.getpgid(proc.pid))
    for pgid in groups - {own, 0, 1}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def kill_tree(pid: int, *, timeout_s: float = 15) -> list[int]:
    """SIGKILL ``pid`` and everything below it (a lost host, an OOM kill); wait until they are
    gone and return their pids. The tree is snapshot before the first signal, so a task process
    in a group of its own, re-parented to init as its supervisor dies, is still killed."""
    procs = tree(pid)
    signal_all(procs, signal.SIGKILL)
    psutil.wait_procs(procs, timeout=timeout_s)
    return [p.pid for p in procs]


def sweep(token: str, *, timeout_s: float = 10) -> list[int]:
    """SIGKILL every process that carries the stack's marker; returns the pids it found."""
    pids: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs = marked(token)
        if not procs:
            break
        pids += [p.pid for p in procs]
        signal_all(procs, signal.SIGKILL)
        psutil.wait_procs(procs, timeout=2)
    return sorted(set(pids))


def reap_orphaned_stacks() -> list[int]:
    """Kill processes of stacks whose owning test process is gone (a test run that was itself
    SIGKILLed could not clean up). Stacks of live test runs, e.g. a colleague's, are left alone."""
    orphans = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ValueError):
            env = proc.environ()
            if MARK in env and not psutil.pid_exists(int(env.get(OWNER, "0"))):
                orphans.append(proc)
    signal_all(orphans, signal.SIGKILL)
    psutil.wait_procs(orphans, timeout=5)
    return [p.pid for p in orphans]


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` that still run (zombies count as gone)."""
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
    return out
