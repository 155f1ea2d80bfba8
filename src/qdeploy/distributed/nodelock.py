"""Timing that other work on the same machine cannot disturb: a readers-writer lock on a node-local file.

Work that runs side by side on one machine (a sweep's cells) holds the lock shared; a benchmark holds it
exclusive, so it starts only when no other cell on that machine is computing and none starts while it times.
Active only where $QDEPLOY_NODE_LOCK names the lock file (the sweep sets it for its cells); a plain run takes no
lock. The sweep takes the shared lock before it starts a cell's process and hands the open descriptor down
($QDEPLOY_NODE_LOCK_FD), so the cell's start-up and exit (imports: seconds of CPU) are covered too, and no new cell
starts while another times. POSIX advisory locks (fcntl.flock): released by the kernel if a process dies.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time

ENV, ENV_FD = "QDEPLOY_NODE_LOCK", "QDEPLOY_NODE_LOCK_FD"
_state = {"fd": None}


@contextlib.contextmanager
def shared_fd(path: str):
    """(For the sweep) the lock file opened and held shared for the block; yields the descriptor to hand down."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _path() -> str | None:
    return os.environ.get(ENV) or None


@contextlib.contextmanager
def working():
    """Hold the node shared for the block (a whole run); a no-op without $QDEPLOY_NODE_LOCK."""
    inherited = os.environ.get(ENV_FD)
    if inherited is not None and _state["fd"] is None:
        _state["fd"] = int(inherited)          # already held shared by the sweep that started this process
        try:
            yield
        finally:
            _state["fd"] = None
        return
    path = _path()
    if path is None or _state["fd"] is not None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _state["fd"] = fd
    try:
        yield
    finally:
        _state["fd"] = None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def timing():
    """Hold the node exclusive for the block (a benchmark): waits until no other holder computes. Returns facts
    {node, waited_s, exclusive} for the record."""
    fd = _state["fd"]
    facts = {"node": socket.gethostname(), "waited_s": 0.0, "exclusive": fd is not None}
    if fd is None:
        yield facts
        return
    t0 = time.perf_counter()
    fcntl.flock(fd, fcntl.LOCK_EX)      # converts our shared lock: blocks while any other process holds it shared
    facts["waited_s"] = round(time.perf_counter() - t0, 3)
    try:
        yield facts
    finally:
        fcntl.flock(fd, fcntl.LOCK_SH)
