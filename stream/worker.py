"""The worker process: the only place that runs models.

Per poll: take the newest frame of every source (one SUB socket per source, each CONFLATE, so
sources are served fairly and never queue), score them as one batch

    the scoring core, engines.scorer: prepare_frame (the bundle's frame spec) -> infer ->
    locate (STN boxes in source pixels) -> score_frame (running uninorm per source)
    -> stream.result_fields (display pixels, RESULT fields) -> PUB RESULT

and hand the newest frame to the segmentation lane (:mod:`stream.seglane`), which runs at its
own rate on a second thread so it never delays the scores (or inline on every frame on a GPU).
Sequence gaps are counted as skipped frames. This module is the process (sockets, loop, CLI);
the engine, per-stream state and scoring path are :class:`stream.workercore.Worker`.

Video score: each RESULT's ``video`` has the score, Roy et al.'s ``probs`` (softmax of the
aggregate, ~uniform once a long clip saturates it), ``evidence`` (each score's share of the
evidence, whose largest is the score: what the page's bars show), ``log_aggregate`` and
``frame_share`` (fraction of the video's frames per frame score)
(:func:`stream.result_fields.video_meta` of the stream's :class:`engines.scorer.RunningScore`).
A looped file does not restart it on every pass: once a pass scored from the file's start has
ended, each RESULT's ``video`` is that pass's score with ``complete: true`` (and
``pass_frames``, the frames of the pass now playing), until the source changes or a reset.
``crops`` says whether the page draws the crop boxes by default (none for a whole-frame model,
whose θ are the identity; hidden for a bundle marked ``models.frame.localises: false``;
:func:`stream.result_fields.crops_meta`).

Findings: when the bundle's frame model has a findings head, each RESULT carries ``findings``
({name: probability} of the frame) and ``video.findings``, the stream's running clip summary
({name: {"mean", "max", "fraction", "present"}}, :class:`engines.findings.RunningFindings`,
O(F) state), restarted with the video score; both are null otherwise.

Faults: a garbage message, a message of another wire version (``old_version``: logged once
in clear words, then once a minute), a FRAME or HEARTBEAT whose JSON fields have the wrong
type or size (:mod:`stream.messages`; those fields are copied into results), a bad frame, or
any exception raised while handling one message is logged (rate-limited) and counted, and the
message is dropped; the loop goes on. The counts travel in the worker's heartbeat
(``dropped``) and end up in ``pleura live --stats-json``.

Per-stream state (video score, counters, last result) lives in a bounded
:class:`stream.streamtable.StreamTable`: streams idle for ``stream_idle_s`` are forgotten and
at most ``max_streams`` are held (least recently seen evicted first); ``--max-streams`` and
``--stream-idle-s`` set both.

Source states: capture sends its source's state ("connecting", "playing", "stalled",
"reconnecting", "ended", "error", and "paused" / "stopped" while held by CONTROL) as
HEARTBEAT messages on the frames socket. The worker re-publishes the stream's last RESULT with
the new ``source_state`` and ``source_detail`` (``resent``: not a new frame); for a source
that never delivered a frame it publishes a *status result* instead: a blank display frame,
no scores, ``status_only: true``, ``source_detail`` saying why.

CONTROL messages (JSON part; the supervisor forwards the UI's to worker and captures):

- ``{"cmd": "reset"}``: restart the video score of every stream;
- ``{"cmd": "reset", "stream_id": N}``: restart stream N only; a ``stream_id`` that is not an
  integer, or names a stream the worker does not hold, is refused with a log line (nothing
  is reset);
- ``pause``, ``resume``, ``start``, ``stop``, ``source``, ``loop``, ``record``, ``bundle``: for
  capture and the supervisor, ignored here; anything else is logged as unknown and ignored.

Log lines about control messages are rate-limited like the fault lines.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from dataclasses import replace

import zmq

import engines
from stream.config import ConfigError, WorkerConfig
from stream.lifecycle import Heartbeat, exit_if_stuck, install_stop_handler
from stream.messages import FrameMeta, MetaError, SourceState
from stream.options import add_config_argument, add_flags, process_config, resolve_bundle
from stream.sockets import control_socket, pub_socket, sub_socket
from stream.wire import Kind, Message, WireError, WireVersionError, decode
from stream.workercore import Worker

__all__ = ["Worker", "WorkerConfig", "run_worker"]

log = logging.getLogger(__name__)


def run_worker(cfg: WorkerConfig, stop: threading.Event,
               go: threading.Event | None = None) -> int:
    """The worker loop: poll sources, score, publish, heartbeat, until ``stop``.

    Args:
        go: standby mode: load the bundle and engine, then wait (heartbeating "standby") until
            ``go`` is set before binding sockets. The supervisor keeps one standby worker so a
            crashed worker is replaced in milliseconds, not a process start-up.

    Long because it owns the sockets, the standby wait and the poll loop whose ``finally``
    closes them all; the scoring itself is :class:`stream.workercore.Worker`.
    """
    worker = Worker(cfg)
    ctx: zmq.Context = zmq.Context.instance()
    if go is not None:
        sb = Heartbeat(ctx, cfg.status_addr, "worker")
        while not go.wait(0.2):
            if stop.is_set():
                worker.close()
                sb.close()
                return 0
            sb.beat(standby=True)
        sb.close()
        log.info("standby worker taking over")
    subs = [sub_socket(ctx, a, conflate=True) for a in cfg.frames_addrs]
    pub = pub_socket(ctx, cfg.results_addr, hwm=30)  # UI conflates; recorder / stats need all
    ctl = control_socket(ctx, cfg.control_addr)
    hb = Heartbeat(ctx, cfg.status_addr, "worker")
    poller = zmq.Poller()
    for s in subs + ([ctl] if ctl is not None else []):
        poller.register(s, zmq.POLLIN)
    log.info("worker: %s on %s, seg %s, sources %s -> %s", worker.bundle.name, worker.backend,
             worker.seg_mode, list(cfg.frames_addrs), cfg.results_addr)
    hb.beat(force=True, processed=0, skipped=0, ready=True)

    def send(raw: bytes | None) -> None:
        if raw is not None:
            with contextlib.suppress(zmq.Again):
                pub.send(raw, zmq.NOBLOCK, copy=False)

    try:
        while not stop.is_set():
            ready = dict(poller.poll(100))
            batch = []
            for s in subs:
                if s in ready:
                    got = worker.guard("receiving a message", _receive, s, worker)
                    if got is not None:
                        batch.append(got)
            if ctl is not None and ctl in ready:
                worker.guard("handling control messages", _control, ctl, worker)
            if batch:
                for res, st in worker.guard("scoring a batch", worker.process, batch) or ():
                    send(worker.guard("encoding a result", worker.finish, res, st))
            worker.mark_idle()  # a quiet stream's state again, for a page that joined late
            for raw in worker.state_updates():
                send(raw)
            worker.expire()
            hb.beat(processed=worker.processed, skipped=worker.skipped,
                    streams=len(worker.streams), dropped=worker.dropped(),
                    resets=worker.resets.count,
                    **({"engine": worker.engine.status()}  # --backend ray: remote/fallback
                       if hasattr(worker.engine, "status") else {}))
    finally:
        worker.close()
        for s in subs:
            s.close(0)
        pub.close(0)
        hb.close()
        if ctl is not None:
            ctl.close(0)
    return 0


def _receive(sock: zmq.Socket, worker: Worker) -> tuple[Message, FrameMeta] | None:
    try:
        raw = sock.recv(zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return None
    t = time.time()
    try:
        msg = decode(raw.buffer)
    except WireVersionError as exc:  # an older or newer capture: one clear line, counted
        worker.drop("old_version", "frame refused: %s", exc)
        return None
    except WireError as exc:
        worker.drop("garbage", "garbage message dropped (%d bytes): %s", len(raw.buffer), exc)
        return None
    try:
        if msg.kind == Kind.HEARTBEAT:  # a source state change: tell the UI
            worker.on_source_state(msg.stream_id, SourceState.parse(msg.meta))
            return None
        if msg.kind != Kind.FRAME:
            worker.drop("bad_meta", "unexpected %s message on a frames socket dropped",
                        msg.kind.name)
            return None
        fm = FrameMeta.parse(msg.meta)
    except MetaError as exc:
        worker.drop("bad_meta", "stream %d seq %d: %s message dropped (%s)", msg.stream_id,
                    msg.seq, msg.kind.name, exc)
        return None
    msg.stamp("received", t)
    return msg, fm


def _control(sock: zmq.Socket, worker: Worker) -> None:
    for _ in range(1000):  # bounded: a flood of control messages cannot starve the frames
        try:
            raw = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            msg = decode(raw)
        except WireError as exc:
            worker.drop("control", "bad control message dropped: %s", exc)
            continue
        if msg.kind != Kind.CONTROL:
            worker.drop("control", "%s message on the control socket dropped", msg.kind.name)
            continue
        worker.guard("a control message", worker.control, msg.meta)


# --------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` (its ``[worker]`` section) and one flag per field of
    :class:`stream.config.WorkerConfig`."""
    add_config_argument(p)
    add_flags(p, WorkerConfig)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = process_config(WorkerConfig, args)
    except ConfigError as exc:
        log.error("worker: %s", exc)
        return 2
    cfg = replace(cfg, bundle=resolve_bundle(cfg.bundle))
    stop, done = install_stop_handler(), threading.Event()
    exit_if_stuck(stop, done, 10.0, "worker")
    go = None
    if cfg.standby:
        go = threading.Event()
        signal.signal(signal.SIGUSR1, lambda *_: go.set())
    try:
        return run_worker(cfg, stop, go)
    except (engines.BundleError, ValueError) as exc:  # BundleError is a ValueError
        log.error("worker: %s", exc)
        return 2
    except zmq.ZMQError as exc:
        log.error("worker: cannot use address %s / %s (%s)", cfg.results_addr,
                  cfg.control_addr, exc)
        return 2
    finally:
        done.set()
