"""Per-stream state of the worker, in a bounded table.

Each stream id the worker sees costs memory until it is forgotten: its running uninorm (and
findings summary, O(F)), counters and the last RESULT (with its display frame, ~0.3 MB). The
16-bit ``stream_id`` of the wire header lets a sender name 65,536 streams, so the table is
bounded two ways:

- **idle expiry**: a stream that sent nothing (no frame, no source-state message) for
  ``idle_s`` seconds is forgotten; a capture that is reconnecting re-announces its state, so
  only streams whose capture is gone expire;
- **a cap**: at most ``max_streams`` streams are held; a new stream beyond the cap evicts the
  least recently seen one (LRU).

A forgotten stream that comes back starts a new video score (as after a worker restart).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from engines.scorer import RunningScore
from stream.wire import Message

T = TypeVar("T")

DEFAULT_MAX_STREAMS = 64
DEFAULT_IDLE_S = 300.0


@dataclass
class StreamState:
    """What the worker remembers per source (stream id).

    ``running`` is the scoring core's state of the stream's video
    (:class:`engines.scorer.RunningScore`: the running uninorm video score, the frames per frame
    score 0..3 and the running findings summary).
    """

    running: RunningScore
    restarted: bool
    key: tuple = ()
    last_seq: int | None = None
    skipped: int = 0
    processed: int = 0
    fps: float = 0.0
    last_t: float = 0.0
    source: str = ""
    source_state: str = "playing"
    source_detail: str = ""
    last_result: Message | None = None
    mask_seq: int | None = None

    def reset_video(self) -> None:
        """A new video on this stream: restart the video score, the frame counts and the
        findings summary."""
        self.running.reset()


class StreamTable(Generic[T]):
    """An LRU map stream id -> state with idle expiry and a size cap.

    Args:
        max_streams: most states held (>= 1).
        idle_s: a state not touched for this long is dropped by :meth:`expire` (> 0).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, max_streams: int = DEFAULT_MAX_STREAMS, idle_s: float = DEFAULT_IDLE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        if not idle_s > 0:
            raise ValueError(f"idle_s must be > 0, got {idle_s}")
        self.max_streams, self.idle_s, self.clock = max_streams, idle_s, clock
        self._items: OrderedDict[int, tuple[T, float]] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    def get(self, sid: int) -> T | None:
        """The state of ``sid`` (marked as just seen), or None."""
        item = self._items.get(sid)
        if item is None:
            return None
        self._items[sid] = (item[0], self.clock())
        self._items.move_to_end(sid)
        return item[0]

    def peek(self, sid: int) -> T | None:
        """The state of ``sid`` without marking it as seen."""
        item = self._items.get(sid)
        return None if item is None else item[0]

    def put(self, sid: int, state: T) -> list[int]:
        """Insert (or replace) ``sid``'s state; returns the stream ids evicted to make room."""
        self._items[sid] = (state, self.clock())
        self._items.move_to_end(sid)
        out = []
        while len(self._items) > self.max_streams:
            old, _ = self._items.popitem(last=False)
            out.append(old)
        self.evicted += len(out)
        return out

    def expire(self) -> list[int]:
        """Drop states idle for more than ``idle_s``; returns their stream ids."""
        limit = self.clock() - self.idle_s
        out = []
        while self._items:
            sid, (_, seen) = next(iter(self._items.items()))
            if seen >= limit:
                break  # LRU order: every later entry was seen more recently
            self._items.popitem(last=False)
            out.append(sid)
        self.expired += len(out)
        return out

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, sid: object) -> bool:
        return sid in self._items

    def ids(self) -> list[int]:
        return list(self._items)

    def values(self) -> Iterator[T]:
        return (v for v, _ in self._items.values())
