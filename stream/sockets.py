"""The pipeline's ZeroMQ sockets, made one way everywhere: who binds, who connects, what drops.

Frames and results travel PUB -> SUB with ``CONFLATE`` (latest wins, :func:`sub_socket`);
control messages reach a process on a SUB it binds (:func:`control_socket`). Which address
each one uses is planned in :func:`stream.pipeline.compose`.
"""

from __future__ import annotations

import socket

import zmq


def pub_socket(ctx: zmq.Context, addr: str, hwm: int = 2) -> zmq.Socket:
    """A PUB socket bound to ``addr`` that never blocks the sender (drops at ``hwm``)."""
    s = ctx.socket(zmq.PUB)
    s.setsockopt(zmq.SNDHWM, hwm)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(addr)
    return s


def sub_socket(ctx: zmq.Context, addr: str, conflate: bool = True, hwm: int = 1000) -> zmq.Socket:
    """A SUB socket connected to ``addr``; ``conflate``: keep only the newest message."""
    s = ctx.socket(zmq.SUB)
    if conflate:
        s.setsockopt(zmq.CONFLATE, 1)
    else:
        s.setsockopt(zmq.RCVHWM, hwm)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(addr)
    return s


def control_socket(ctx: zmq.Context, addr: str | None) -> zmq.Socket | None:
    """A SUB socket bound to ``addr`` that the UI / supervisor PUB connects to (or None)."""
    if not addr:
        return None
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.bind(addr)
    return s


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (the OS picks it; another process may take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
