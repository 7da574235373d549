"""Logging that cannot flood: a problem repeated every frame is logged a few times, then summed."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """Logs the first few occurrences of a problem, then one summary line per ``every_s``.

    ``count`` is the number of occurrences (logged or not): the counter behind the statistics.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 5.0, burst: int = 3):
        self.logger, self.every_s, self.burst = logger, every_s, burst
        self.count, self._last, self._suppressed = 0, 0.0, 0

    def log(self, level: int, msg: str, *args) -> None:
        self.count += 1
        now = time.monotonic()
        if self.count <= self.burst or now - self._last >= self.every_s:
            extra = f" (+{self._suppressed} similar)" if self._suppressed else ""
            self.logger.log(level, msg + extra, *args)
            self._last, self._suppressed = now, 0
        else:
            self._suppressed += 1

    def warning(self, msg: str, *args) -> None:
        self.log(logging.WARNING, msg, *args)

    def info(self, msg: str, *args) -> None:
        self.log(logging.INFO, msg, *args)
