"""The recorder process (``pleura live --record DIR``): frames losslessly, results as JSONL.

Layout::

    DIR/
      frames-<stream>/<seq:09d>.png   every frame capture sent (grey, ROI-cropped: exactly what
                                      the worker scored), lossless PNG, written atomically
      frames-<stream>.jsonl           one line per frame: seq, index, pts_s, source, epoch, roi,
                                      stamps, file
      results.jsonl                   one line per RESULT (its JSON,
                                      :class:`stream.messages.Result`, stamps added, and
                                      ``mask_file`` / ``unc_file`` when it carries masks)
      masks-<stream>/<mask_seq:09d>.png       each distinct segmentation label map (0 = BG,
      masks-<stream>/<mask_seq:09d>-unc.png   s + 1 = score s) and uncertainty map, lossless

Crash safety: each PNG is written to a temporary name and renamed, so a file that exists is
complete; the JSONL files are flushed (and fsync'ed) at least once a second, so a ``kill -9``
loses at most the last second. A recorded stream folder is an image folder, so
``pleura score DIR/frames-0`` re-scores it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import IO

import cv2
import zmq

from stream.lifecycle import Heartbeat, install_stop_handler
from stream.messages import Result
from stream.ratelog import RateLimitedLog
from stream.sockets import sub_socket
from stream.wire import STAGES, Kind, Message, WireError, WireVersionError, decode

log = logging.getLogger(__name__)


class Recorder:
    """Writes frames and results under ``out``; :meth:`tick` flushes at most every ``flush_s``."""

    def __init__(self, out: str | Path, flush_s: float = 0.5) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.flush_s = flush_s
        self._files: dict[str, IO[str]] = {}
        self._last_flush = time.monotonic()
        self.frames = 0
        self.results = 0

    def _jsonl(self, name: str) -> IO[str]:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = open(self.out / name, "a", encoding="utf-8")  # noqa: SIM115
        return f

    def frame(self, msg: Message) -> None:
        """Store one FRAME message."""
        if msg.array is None:
            return
        folder = self.out / f"frames-{msg.stream_id}"
        folder.mkdir(exist_ok=True)
        name = f"{msg.seq:09d}.png"
        img = msg.array if msg.array.ndim == 2 else cv2.cvtColor(msg.array, cv2.COLOR_RGB2BGR)
        _write_png(folder / name, img)
        m = msg.meta
        line = {"seq": msg.seq, "index": m.get("index"), "pts_s": m.get("pts_s"),
                "source": m.get("source"), "epoch": m.get("epoch"), "roi": m.get("roi"),
                "stamps": dict(zip(STAGES, msg.stamps.tolist(), strict=True)),
                "file": f"frames-{msg.stream_id}/{name}"}
        self._jsonl(f"frames-{msg.stream_id}.jsonl").write(json.dumps(line) + "\n")
        self.frames += 1

    def result(self, msg: Message) -> None:
        """Store one RESULT message's JSON and each new mask (the display image is not stored).

        Raises:
            stream.messages.MetaError: not a valid RESULT (nothing is written).
        """
        line = Result.from_message(msg).to_json()
        line["stamps"] = dict(zip(STAGES, msg.stamps.tolist(), strict=True))
        seq = line["mask_seq"]
        for key, suffix in (("mask", ""), ("unc", "-unc")):
            a = msg.arrays.get(key)
            if a is None or seq is None:
                continue
            rel = f"masks-{msg.stream_id}/{seq:09d}{suffix}.png"
            if not (self.out / rel).exists():  # a mask is re-sent until the next one is done
                (self.out / rel).parent.mkdir(exist_ok=True)
                _write_png(self.out / rel, a)
            line[f"{key}_file"] = rel
        self._jsonl("results.jsonl").write(json.dumps(line) + "\n")
        self.results += 1

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_flush >= self.flush_s:
            for f in self._files.values():
                f.flush()
                os.fsync(f.fileno())
            self._last_flush = now

    def close(self) -> None:
        self.tick(force=True)
        for f in self._files.values():
            f.close()
        self._files.clear()


def _write_png(path: Path, img) -> None:
    """Lossless PNG, written to a temporary name and renamed (a file that exists is whole)."""
    tmp = path.parent / f".{path.name}.tmp.png"
    if not cv2.imwrite(str(tmp), img, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"cannot write {tmp}")
    os.replace(tmp, path)


def run_recorder(out: str, frames: list[str], results: str | None, status: str | None,
                 stop) -> int:
    rec = Recorder(out)
    ctx: zmq.Context = zmq.Context.instance()
    subs = [sub_socket(ctx, a, conflate=False, hwm=2000) for a in frames]
    res = sub_socket(ctx, results, conflate=False, hwm=2000) if results else None
    hb = Heartbeat(ctx, status, "recorder")
    poller = zmq.Poller()
    for s in subs + ([res] if res is not None else []):
        poller.register(s, zmq.POLLIN)
    log.info("recording to %s", out)
    refused = RateLimitedLog(log, every_s=60.0, burst=1)
    try:
        while not stop.is_set():
            for sock, _ in poller.poll(100):
                for _ in range(100):
                    try:
                        msg = decode(sock.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
                    except WireVersionError as exc:
                        refused.log(logging.ERROR, "recorder: message refused: %s", exc)
                        continue
                    except WireError as exc:
                        log.warning("recorder: bad message dropped: %s", exc)
                        continue
                    try:
                        if msg.kind == Kind.FRAME:
                            rec.frame(msg)
                        elif msg.kind == Kind.RESULT:
                            rec.result(msg)
                    except WireError as exc:  # a RESULT that is not a stream.messages.Result
                        log.warning("recorder: bad %s dropped: %s", msg.kind.name, exc)
            rec.tick()
            hb.beat(frames=rec.frames, results=rec.results)
    finally:
        rec.close()
        for s in subs + ([res] if res is not None else []):
            s.close(0)
        hb.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream.recorder",
                                description="record frames and results (started by pleura live)")
    p.add_argument("--out", required=True)
    p.add_argument("--frames", action="append", default=[])
    p.add_argument("--results", default=None)
    p.add_argument("--status", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    stop = install_stop_handler()
    try:
        return run_recorder(args.out, args.frames, args.results, args.status, stop)
    except OSError as exc:
        log.error("recorder: %s (is %s writable?)", exc, args.out)
        return 2


if __name__ == "__main__":
    sys.exit(main())
