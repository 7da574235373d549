"""The capture process: source -> scan-region crop -> PUB frames. Never blocks on the worker.

Every frame gets the next sequence number and two stage stamps (``grabbed``: the source
delivered it, ``sent``: handed to ZeroMQ). The PUB socket drops when its tiny queue is full, so a
slow worker only ever sees a gap in the sequence numbers (it counts those as skipped), never a
stalled capture. State changes of the source ("connecting", "playing", "stalled",
"reconnecting", "ended", "error") go to the worker as HEARTBEAT messages on the same socket (on
change, and again every few seconds while no frame flows, so CONFLATE never eats a frame and a
worker that joined late learns the state); so do "paused" and "stopped" while the CONTROL
commands pause / stop hold the source (the next frame after resume / start says "playing"
again). Periodic heartbeats go to the supervisor. A source that cannot be opened at all (a missing
file, no such device) is reported the same way, as "error" with the reason, before the process
exits (:func:`report_open_error`).

Stopping: SIGINT / SIGTERM set the stop event; a watcher thread then closes the source, which
ends a live source's wait (connecting, reconnecting, stalled) at once. If the loop is still
blocked 3 s later (a decoder or driver call that does not return), the process exits anyway
(:func:`stream.lifecycle.exit_if_stuck`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
import time

import numpy as np
import zmq

from engines.preprocess import to_grey
from stream.config import CaptureConfig, ConfigError
from stream.lifecycle import Heartbeat, exit_if_stuck, install_stop_handler
from stream.messages import MAX_SOURCE_CHARS, FrameMeta, SourceState
from stream.options import add_config_argument, add_flags, process_config, source_options
from stream.roi import RoiTracker
from stream.sockets import control_socket, pub_socket
from stream.sources import DecodedFrame, SourceError, StateChange, open_source
from stream.wire import Kind, Message, WireError, decode, encode

log = logging.getLogger(__name__)

ROI_WAIT_FRAMES = 30
"""With ``--roi auto``, frames before the first detection are held back (not sent), for at most
this many frames of a pass; then the full frame is used until a region is found."""


def run_capture(cfg: CaptureConfig, stop: threading.Event | None = None) -> int:
    """Run until the source ends, ``seconds`` pass, or ``stop`` is set. Returns an exit code.

    Raises:
        SourceError: the source cannot be opened (missing file / device, unreadable file).

    Long because the loop's state (seq, sent, source state, hold, epoch) is read by the two
    reporting closures and the ``finally`` that closes every socket; split, each piece would
    take and return all of it.
    """
    stop = stop or threading.Event()
    if len(cfg.source) > MAX_SOURCE_CHARS:
        raise SourceError(f"source name is {len(cfg.source)} characters long; at most "
                          f"{MAX_SOURCE_CHARS} are allowed")
    try:
        source = open_source(cfg.source, source_options(cfg))
    except SourceError as exc:
        report_open_error(cfg, str(exc))
        raise
    done = threading.Event()
    threading.Thread(target=_close_on_stop, args=(stop, done, source), daemon=True,
                     name="capture-stop").start()
    roi_mode = cfg.roi or ("auto" if source.live else "off")
    tracker = RoiTracker(roi_mode)
    ctx: zmq.Context = zmq.Context.instance()
    pub = pub_socket(ctx, cfg.frames_addr, hwm=2)
    hb = Heartbeat(ctx, cfg.status_addr, "capture")
    ctl = control_socket(ctx, cfg.control_addr)
    session = time.time()
    seq, sent, state, detail, hold, epoch = 0, 0, "playing", "", None, -1
    t_end = None if cfg.seconds is None else time.monotonic() + cfg.seconds

    def send_state(detail: str = "", as_state: str | None = None) -> None:
        said = as_state or state
        meta = SourceState(state=said, source=cfg.source, detail=detail, session=session)
        m = Message(Kind.HEARTBEAT, cfg.stream_id, seq, meta=meta.to_json())
        with contextlib.suppress(zmq.Again):
            pub.send(encode(m), zmq.NOBLOCK)
        hb.beat(force=True, sent=sent, state=said, stream_id=cfg.stream_id, session=session)

    def beat(said: str) -> None:
        hb.beat(sent=sent, state=said, stream_id=cfg.stream_id, session=session)

    log.info("capture %s -> %s (stream %d, roi %s)", cfg.source, cfg.frames_addr,
             cfg.stream_id, roi_mode)
    time.sleep(0.2)  # let subscribers connect before the first frame (PUB drops otherwise)
    try:
        for ev in source.events():
            if stop.is_set() or (t_end is not None and time.monotonic() > t_end):
                break
            hold = _poll_control(ctl, hold)
            if isinstance(ev, StateChange):
                if (ev.state, ev.detail) != (state, detail):  # not a repeat: log it
                    log.info("source %s: %s %s", cfg.source, ev.state, ev.detail)
                state, detail = ev.state, ev.detail
                send_state(detail)
                if state == "error":
                    return 1
                continue
            assert isinstance(ev, DecodedFrame)
            if hold:  # hold the source where it is: a file resumes at this frame
                hold = _hold(hold, stop, lambda h: _poll_control(ctl, h), send_state, beat)
                if hold or source.live:
                    continue  # stopping, or a live frame that is stale now
            if ev.epoch != epoch:
                epoch = ev.epoch
                tracker.reset()
            grabbed = time.time()
            try:
                img = np.ascontiguousarray(ev.image) if cfg.colour else to_grey(ev.image)
                full_hw = list(img.shape[:2])
                roi = tracker.update(img if img.ndim == 2 else to_grey(img))
                if roi is None and roi_mode == "auto" and ev.index < ROI_WAIT_FRAMES:
                    continue  # the scan region is not found yet: never score the whole screen
                if roi is not None:
                    img = roi.crop(img)  # a view: encode() copies it once, into the message
                meta = FrameMeta(source=cfg.source, index=ev.index, pts_s=ev.pts_s, epoch=epoch,
                                 session=session, state=state, sent=sent,
                                 full_hw=tuple(full_hw),
                                 roi=tuple(roi.as_list()) if roi else None)
                m = Message(Kind.FRAME, cfg.stream_id, seq, meta=meta.to_json(), array=img)
                m.stamp("grabbed", grabbed)
                m.stamp("sent", time.time())
                pub.send(encode(m), zmq.NOBLOCK, copy=False)
                sent += 1
            except zmq.Again:
                pass  # PUB never blocks; this is a gap the worker counts as skipped
            except (ValueError, WireError) as exc:
                log.warning("frame %d of %s dropped: %s", ev.index, cfg.source, exc)
            seq += 1
            hb.beat(sent=sent, state=state, stream_id=cfg.stream_id, session=session)
        else:
            state = "stopped" if stop.is_set() else "ended"
        send_state("capture stopped")
        return 0
    finally:
        done.set()
        source.close()
        hb.beat(force=True, sent=sent, state="stopped", stream_id=cfg.stream_id,
                session=session)
        pub.close(0)
        hb.close()
        if ctl is not None:
            ctl.close(0)


OPEN_ERROR_SENDS = 4
"""How often a source that cannot be opened is reported to the worker, ``OPEN_ERROR_EVERY_S``
apart: a PUB drops what it sends before a subscriber has connected (the worker's SUB connects
to this fresh socket within a few hundred ms)."""
OPEN_ERROR_EVERY_S = 0.25


def report_open_error(cfg: CaptureConfig, detail: str) -> None:
    """Tell the worker (and so the page) that the source cannot be opened: the state "error"
    with the reason, on the frames socket, before the capture process exits. Without it the
    page said "Connecting" for ever while only the log had the reason (issue #29). Best
    effort: a frames address that cannot be bound is left to the caller's error."""
    ctx: zmq.Context = zmq.Context.instance()
    try:
        pub = pub_socket(ctx, cfg.frames_addr, hwm=2)
    except zmq.ZMQError:
        return
    meta = SourceState(state="error", source=cfg.source[:MAX_SOURCE_CHARS], detail=detail,
                       session=time.time())
    raw = encode(Message(Kind.HEARTBEAT, cfg.stream_id, 0, meta=meta.to_json()))
    try:
        for _ in range(OPEN_ERROR_SENDS):
            time.sleep(OPEN_ERROR_EVERY_S)
            with contextlib.suppress(zmq.Again):
                pub.send(raw, zmq.NOBLOCK)
    finally:
        pub.close(0)


def _close_on_stop(stop: threading.Event, done: threading.Event, source) -> None:
    """Close ``source`` as soon as ``stop`` is set (ends a live source's waits at once)."""
    while not done.is_set():
        if stop.wait(0.1):
            source.close()
            return


def _hold(hold: str, stop: threading.Event, poll, send_state, beat,
          every_s: float = 2.0) -> str | None:
    """Wait while paused or stopped, telling the worker so (state "paused" / "stopped") at
    once, on a change, and every ``every_s`` (CONFLATE keeps only the newest message, and a
    worker that starts later learns it). Returns None once resumed / started, the hold still
    in force when ``stop`` ended the wait.

    Args:
        hold: "paused" or "stopped".
        poll: hold -> hold after the pending CONTROL messages.
        send_state, beat: say the state to the worker / the supervisor.
    """
    said, t_said = None, 0.0
    while hold and not stop.is_set():
        if hold != said or time.monotonic() - t_said >= every_s:
            send_state("", as_state=hold)
            said, t_said = hold, time.monotonic()
        time.sleep(0.05)
        hold = poll(hold)
        beat(hold or "playing")
    return hold


def _poll_control(ctl: zmq.Socket | None, hold: str | None) -> str | None:
    """Apply pending CONTROL messages; returns what holds the source: "paused" (pause),
    "stopped" (stop) or None (resume / start)."""
    while ctl is not None:
        try:
            raw = ctl.recv(zmq.NOBLOCK)
        except zmq.Again:
            break
        try:
            cmd = decode(raw).meta.get("cmd")
        except WireError as exc:
            log.warning("bad control message dropped: %s", exc)
            continue
        if cmd == "pause":
            hold = "paused"
        elif cmd == "stop":
            hold = "stopped"
        elif cmd in ("resume", "start"):
            hold = None
    return hold


# --------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` (its ``[capture]`` section) and one flag per field of
    :class:`stream.config.CaptureConfig`."""
    add_config_argument(p)
    add_flags(p, CaptureConfig)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = process_config(CaptureConfig, args)
    except ConfigError as exc:
        log.error("capture: %s", exc)
        return 2
    stop, done = install_stop_handler(), threading.Event()
    exit_if_stuck(stop, done, 3.0, "capture")
    try:
        return run_capture(cfg, stop)
    except (SourceError, ValueError) as exc:
        log.error("capture: %s", exc)
        return 2
    except zmq.ZMQError as exc:
        log.error("capture: cannot use address %s (%s); is another capture running?",
                  cfg.frames_addr, exc)
        return 2
    finally:
        done.set()
