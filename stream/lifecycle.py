"""A pipeline process's life: stop signals, heartbeats to the supervisor, the stuck-exit backstop.

Capture, worker, recorder and UI each call :func:`install_stop_handler` first, beat a
:class:`Heartbeat` in their loop and arm :func:`exit_if_stuck` when told to stop. Their sockets
are made by :mod:`stream.sockets`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

import zmq

from stream.messages import ProcessBeat
from stream.wire import Kind, Message, WireError, encode

log = logging.getLogger(__name__)


def install_stop_handler() -> threading.Event:
    """SIGINT / SIGTERM set the returned event instead of raising (clean shutdown, no traceback)."""
    stop = threading.Event()

    def handler(signum, _frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop


class Heartbeat:
    """PUSHes HEARTBEAT messages to the supervisor's status address (never blocks)."""

    def __init__(self, ctx: zmq.Context, addr: str | None, role: str, every_s: float = 0.25):
        self.role, self.every_s = role, every_s
        self._last = 0.0
        self.sock = None
        if addr:
            self.sock = ctx.socket(zmq.PUSH)
            self.sock.setsockopt(zmq.SNDHWM, 10)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(addr)

    def beat(self, force: bool = False, **fields) -> None:
        now = time.time()
        if self.sock is None or (not force and now - self._last < self.every_s):
            return
        self._last = now
        with contextlib.suppress(zmq.Again, WireError):  # MetaError is a WireError
            beat = ProcessBeat(self.role, os.getpid(), now, fields)
            self.sock.send(encode(Message(Kind.HEARTBEAT, meta=beat.to_json())), zmq.NOBLOCK)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)


def exit_if_stuck(stop: threading.Event, done: threading.Event, grace_s: float,
                  what: str) -> threading.Thread:
    """Backstop for a clean stop: once ``stop`` is set, give the main loop ``grace_s`` seconds
    to finish (it sets ``done``); if it is still blocked (in a decoder, a driver, a long sleep),
    log it and end the process with exit code 1. Returns the (daemon) watcher thread."""

    def watch() -> None:
        while not done.is_set():
            if stop.wait(0.2):
                break
        if done.wait(grace_s):
            return
        log.error("%s did not stop within %.1f s of the stop signal; exiting now", what,
                  grace_s)
        logging.shutdown()
        os._exit(1)

    t = threading.Thread(target=watch, name="exit-if-stuck", daemon=True)
    t.start()
    return t
