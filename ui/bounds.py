"""What one HTTP request may cost the page: parsed parameters, admission gates, deadlines.

Every query parameter of the live endpoints is parsed here from its raw text, bounded, and a
bad value is a 400 that names the parameter and the accepted range (never a NaN that turns a
long-poll into a busy loop, issue #15). Work that holds a thread (a long-poll) or a connection
(an MJPEG stream) passes a :class:`Gate`: a fixed number of slots, and a request that finds
them all taken gets a 503 at once instead of queueing behind the others.
"""

from __future__ import annotations

import math
import re
import threading

import anyio
import fastapi
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
FLAG_VALUES = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}


class BadParam(fastapi.HTTPException):
    """A query parameter that is missing its form or range: HTTP 400 with the reason."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=400, detail=detail)


def int_param(name: str, raw: str | None, default: int, lo: int, hi: int) -> int:
    """``raw`` as an integer in ``[lo, hi]``; ``default`` when absent.

    Raises:
        BadParam: not a plain decimal integer, or out of range.
    """
    if raw is None:
        return default
    text = raw.strip()
    if not INTEGER.fullmatch(text):
        raise BadParam(f"{name}={raw[:40]!r} is not an integer; give one in [{lo}, {hi}]")
    value = int(text)
    if not lo <= value <= hi:
        raise BadParam(f"{name}={value} is out of range; give an integer in [{lo}, {hi}]")
    return value


def float_param(name: str, raw: str | None, default: float, lo: float, hi: float) -> float:
    """``raw`` as a finite number in ``[lo, hi]``; ``default`` when absent.

    Raises:
        BadParam: not a number, NaN or infinite, or out of range.
    """
    if raw is None:
        return default
    try:
        value = float(raw[:40])
    except ValueError:
        raise BadParam(f"{name}={raw[:40]!r} is not a number; give one in [{lo:g}, {hi:g}]"
                       ) from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadParam(f"{name}={raw[:40]} is out of range; give a finite number in "
                       f"[{lo:g}, {hi:g}]")
    return value


def flag_param(name: str, raw: str | None, default: bool) -> bool:
    """``raw`` as a yes/no flag (1/0, true/false, yes/no, on/off); ``default`` when absent.

    Raises:
        BadParam: any other value.
    """
    if raw is None:
        return default
    value = FLAG_VALUES.get(raw.strip().lower())
    if value is None:
        raise BadParam(f"{name}={raw[:40]!r} is not a flag; give 1 or 0")
    return value


class Slot:
    """One admitted request; :meth:`release` gives the slot back (idempotent)."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self._held = True

    def release(self) -> None:
        with self._gate._lock:
            if self._held:
                self._held = False
                self._gate.busy -= 1


class Gate:
    """At most ``slots`` requests inside at once; the next one is refused, never queued.

    ``limiter`` runs the admitted requests' blocking work on threads of their own, so a gate
    full of long-polls never takes a thread from the server's shared pool (which the rest of
    the page, ``state.json`` included, runs on).

    Args:
        name: what the slots are for, in the 503 message.
        slots: how many requests may be inside.
    """

    def __init__(self, name: str, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a gate needs at least one slot, got {slots}")
        self.name = name
        self.slots = slots
        self.busy = 0
        self.refused = 0
        self.limiter = anyio.CapacityLimiter(slots)
        self._lock = threading.Lock()

    def enter(self) -> Slot:
        """A slot, or HTTP 503 (with ``Retry-After``) when all are taken."""
        with self._lock:
            if self.busy >= self.slots:
                self.refused += 1
                raise fastapi.HTTPException(
                    status_code=503, headers={"Retry-After": "1"},
                    detail=f"too many {self.name} at once (limit {self.slots}); retry shortly")
            self.busy += 1
        return Slot(self)


class BoundedStream(StreamingResponse):
    """A streaming response with a hard deadline that gives its slot back however it ends.

    The deadline covers the whole response, a send blocked on a client that stopped reading
    included; the slot is released on normal end, client disconnect, deadline or error.
    """

    def __init__(self, content, slot: Slot, max_s: float, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.slot = slot
        self.max_s = max_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with anyio.move_on_after(self.max_s):
                await super().__call__(scope, receive, send)
        finally:
            self.slot.release()
