"""The worker process: the only place that runs models.

Per poll: take the newest frame of every source (one SUB socket per source, each CONFLATE, so
sources are served fairly and never queue), score them as one batch

    preprocess (engines.preprocess, the bundle's frame spec) -> engine.frame ->
    postprocess (STN boxes in display pixels) -> running uninorm per source -> PUB RESULT

and hand the newest frame to the segmentation lane (:mod:`stream.seglane`), which runs at its
own rate on a second thread so it never delays the scores (or inline on every frame on a GPU).
Sequence gaps are counted as skipped frames. A bad frame or garbage message is logged and
dropped; nothing in a frame can stop the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np
import zmq

import engines
from engines.preprocess import preprocess_frame, to_grey
from engines.uninorm import RunningUninorm
from stream.options import add_worker_arguments, resolve_bundle
from stream.procutil import (
    Heartbeat,
    RateLimitedLog,
    control_socket,
    install_stop_handler,
    pub_socket,
    sub_socket,
)
from stream.results import crop_boxes_display, display_frame, timing_ms
from stream.seglane import SegLane
from stream.wire import Kind, Message, WireError, decode, encode

log = logging.getLogger(__name__)

DEFAULT_E = (0.5, 0.5, 0.5, 0.5)


@dataclass(frozen=True)
class WorkerConfig:
    """Worker settings.

    Attributes:
        frames_addrs: one address per source to SUB from (CONFLATE: newest frame wins).
        results_addr: address the results PUB binds.
        bundle: model bundle folder.
        backend: "auto", "onnxruntime" or "tensorrt".
        threads: intra-op threads of the frame model (None: all cores, or all but one when
            a segmentation lane runs on the CPU; the lane itself uses one thread).
        control_addr: address to bind a SUB socket for CONTROL ({"cmd": "reset"}), or None.
        status_addr: supervisor heartbeat address, or None.
        seg: "auto" (inline on GPU, lane on CPU), "lane", "inline" or "off".
        seg_hz: highest segmentation rate of the lane.
        mc_samples: MC-dropout passes for the uncertainty map (0 = none).
        display_max: long side of the display frame sent with each result.
        restarted: this worker replaces one that died: video scores are marked restarted.
        frame_model: "auto" (the bundle's CPU default), "fp32" or "int8" (ONNX Runtime).
    """

    frames_addrs: tuple[str, ...]
    results_addr: str
    bundle: str
    backend: str = "auto"
    threads: int | None = None
    control_addr: str | None = None
    status_addr: str | None = None
    seg: str = "auto"
    seg_hz: float = 2.0
    mc_samples: int = 0
    display_max: int = 640
    restarted: bool = False
    frame_model: str = "auto"


@dataclass
class StreamState:
    """What the worker remembers per source (stream id)."""

    agg: RunningUninorm
    restarted: bool
    key: tuple = ()
    last_seq: int | None = None
    skipped: int = 0
    processed: int = 0
    fps: float = 0.0
    last_t: float = 0.0
    source: str = ""
    source_state: str = "playing"
    last_result: Message | None = None
    mask_seq: int | None = None


class Worker:
    """Owns the engine, the sockets and the per-stream state. :meth:`run` is the loop."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        bundle = engines.load_bundle(cfg.bundle)
        self.bundle = bundle
        gpu_hint = cfg.backend == "tensorrt"
        lane = bundle.has_segmentation() and (cfg.seg == "lane" or (cfg.seg == "auto"
                                                                    and not gpu_hint))
        threads = cfg.threads
        if threads is None and lane:  # one core for the seg lane, the rest for the scores
            threads = max(1, (os.cpu_count() or 2) - 1)
        opts = {} if cfg.frame_model == "auto" else {"frame_model": cfg.frame_model}
        self.engine = engines.create_engine(bundle, backend=cfg.backend, threads=threads, **opts)
        self.spec = bundle.frame_spec
        self.e = np.asarray(bundle.uninorm_e or DEFAULT_E)
        if bundle.uninorm_e is None:
            log.warning("bundle %s has no aggregator.json; uninorm e = %s", bundle.name, DEFAULT_E)
        self.backend = getattr(self.engine, "backend", "?")
        gpu = getattr(self.engine, "device", "cpu") != "cpu"
        mode = cfg.seg if cfg.seg != "auto" else ("inline" if gpu else "lane")
        self.seg_mode = mode if bundle.has_segmentation() else "off"
        self.seg: SegLane | None = None
        if self.seg_mode != "off":
            seg_engine = (self.engine if self.seg_mode == "inline" else
                          engines.create_engine(bundle, backend=cfg.backend, threads=1))
            self.seg = SegLane(seg_engine, bundle.seg_spec, cfg.seg_hz, cfg.mc_samples,
                               threaded=self.seg_mode == "lane")
        self.streams: dict[int, StreamState] = {}
        self.bad = RateLimitedLog(log)      # bad frames
        self.garbage = RateLimitedLog(log)  # undecodable messages
        self.processed = 0
        self.skipped = 0
        self.state_changed: set[int] = set()

    # ------------------------------------------------------------------ per-stream state
    def _state(self, msg: Message) -> StreamState:
        st = self.streams.get(msg.stream_id)
        key = (msg.meta.get("source"), msg.meta.get("session"), msg.meta.get("epoch"))
        if st is None:
            st = StreamState(RunningUninorm(self.e), restarted=self.cfg.restarted, key=key)
            self.streams[msg.stream_id] = st
        elif key != st.key:  # new source, restarted capture or a new loop pass: new video
            st.agg.reset()
            st.restarted, st.key, st.last_seq, st.mask_seq = False, key, None, None
            if self.seg is not None:
                self.seg.forget(msg.stream_id)
        st.source = str(msg.meta.get("source", ""))
        st.source_state = str(msg.meta.get("state", "playing"))
        if st.last_seq is not None and msg.seq > st.last_seq + 1:
            gap = msg.seq - st.last_seq - 1
            st.skipped += gap
            self.skipped += gap
        st.last_seq = msg.seq
        return st

    def reset(self, stream_id: int | None = None) -> None:
        """Restart the video score of one stream (or all)."""
        for sid, st in self.streams.items():
            if stream_id is None or sid == stream_id:
                st.agg.reset()
                st.restarted = False

    # ------------------------------------------------------------------ the scoring path
    def process(self, batch: list[Message]) -> list[Message]:
        """Score a batch of FRAME messages (at most one per stream) -> RESULT messages."""
        items = []
        for msg in batch:
            try:
                if msg.array is None or msg.array.dtype != np.uint8:
                    raise ValueError("FRAME without a uint8 image")
                grey = to_grey(msg.array)
                x, lb = preprocess_frame(grey, self.spec)
                items.append((msg, grey, x, lb))
            except ValueError as exc:
                self.bad.warning("stream %d seq %d: bad frame dropped (%s)", msg.stream_id,
                                 msg.seq, exc)
        if not items:
            return []
        t_pre = time.time()
        x = np.stack([it[2] for it in items])
        out = self.engine.frame(x)
        t_inf = time.time()
        in_hw = (self.spec.height, self.spec.width)
        results = []
        for i, (msg, grey, _x, lb) in enumerate(items):
            st = self._state(msg)
            probs = out.probs[i].astype(np.float64)
            try:
                st.agg.update(probs)
            except ValueError as exc:
                self.bad.warning("stream %d seq %d: %s", msg.stream_id, msg.seq, exc)
                continue
            disp, scale = display_frame(grey, self.cfg.display_max)
            meta = {
                "seq": msg.seq, "stream_id": msg.stream_id, "source": st.source,
                "frame_hw": list(grey.shape[:2]), "display_hw": list(disp.shape[:2]),
                "index": msg.meta.get("index"), "pts_s": msg.meta.get("pts_s"),
                "roi": msg.meta.get("roi"), "full_hw": msg.meta.get("full_hw"),
                "probs": probs.tolist(), "score": int(np.argmax(probs)),
                "boxes": crop_boxes_display(out.theta1[i], out.theta2[i], lb, in_hw, scale),
                "video": {"probs": st.agg.probs.tolist(), "score": st.agg.score,
                          "n_frames": st.agg.n_frames, "restarted": st.restarted},
                "mask": None, "batch": len(items),
            }
            if self.seg is not None:
                self.seg.submit(msg.stream_id, msg.seq, grey, disp.shape[:2])
                got = self.seg.latest(msg.stream_id)
                if got is not None:
                    meta["mask"], meta["mask_seq"] = got.payload, got.seq
                    if got.seq != st.mask_seq:  # count each mask's cost once
                        meta["seg_ms"], st.mask_seq = got.ms, got.seq
            res = Message(Kind.RESULT, msg.stream_id, msg.seq, stamps=msg.stamps.copy(),
                          meta=meta, array=disp)
            res.stamp("preprocessed", t_pre)
            res.stamp("inferred", t_inf)
            st.processed += 1
            self.processed += 1
            now = time.time()
            if st.last_t:
                dt = now - st.last_t
                st.fps = 1.0 / dt if st.fps == 0 else 0.9 * st.fps + 0.1 / max(dt, 1e-6)
            st.last_t = now
            results.append(res)
        return results

    def finish(self, res: Message) -> bytes:
        """Add the last stamps and worker-wide fields, encode."""
        st = self.streams[res.stream_id]
        res.stamp("postprocessed", time.time())
        res.meta.update({"skipped": st.skipped, "fps": round(st.fps, 2),
                         "backend": self.backend, "bundle": self.bundle.name,
                         "source_state": st.source_state})
        res.stamp("published", time.time())
        res.meta["timing_ms"] = timing_ms(res.stamps)
        if "seg_ms" in res.meta:
            res.meta["timing_ms"]["seg"] = res.meta.pop("seg_ms")
        res.meta["latency_ms"] = round((res.at("published") - res.at("grabbed")) * 1000.0, 3)
        st.last_result = res
        return encode(res)

    def close(self) -> None:
        if self.seg is not None:
            self.seg.close()
        self.engine.close()


def run_worker(cfg: WorkerConfig, stop: threading.Event,
               go: threading.Event | None = None) -> int:
    """The worker loop: poll sources, score, publish, heartbeat, until ``stop``.

    Args:
        go: standby mode: load the bundle and engine, then wait (heartbeating "standby") until
            ``go`` is set before binding sockets. The supervisor keeps one standby worker so a
            crashed worker is replaced in milliseconds, not a process start-up.
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
    try:
        while not stop.is_set():
            ready = dict(poller.poll(100))
            batch = []
            for s in subs:
                if s in ready:
                    msg = _receive(s, worker)
                    if msg is not None:
                        batch.append(msg)
            if ctl is not None and ctl in ready:
                _control(ctl, worker)
            if batch:
                for res in worker.process(batch):
                    with contextlib.suppress(zmq.Again):
                        pub.send(worker.finish(res), zmq.NOBLOCK, copy=False)
            for sid in worker.state_changed:  # re-send the last result with the new state
                st = worker.streams[sid]
                if st.last_result is not None:
                    st.last_result.meta["source_state"] = st.source_state
                    st.last_result.meta["resent"] = True  # not a new frame (stats skip it)
                    with contextlib.suppress(zmq.Again):
                        pub.send(encode(st.last_result), zmq.NOBLOCK)
            worker.state_changed.clear()
            hb.beat(processed=worker.processed, skipped=worker.skipped)
    finally:
        worker.close()
        for s in subs:
            s.close(0)
        pub.close(0)
        hb.close()
        if ctl is not None:
            ctl.close(0)
    return 0


def _receive(sock: zmq.Socket, worker: Worker) -> Message | None:
    try:
        raw = sock.recv(zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return None
    t = time.time()
    try:
        msg = decode(raw.buffer)
    except WireError as exc:
        worker.garbage.warning("garbage message dropped (%d bytes): %s", len(raw.buffer), exc)
        return None
    if msg.kind == Kind.HEARTBEAT:  # a source state change: tell the UI through the last result
        st = worker.streams.get(msg.stream_id)
        if st is not None and st.last_result is not None:
            st.source_state = str(msg.meta.get("state", st.source_state))
            worker.state_changed.add(msg.stream_id)
        return None
    if msg.kind != Kind.FRAME:
        worker.bad.warning("unexpected %s message on a frames socket dropped", msg.kind.name)
        return None
    msg.stamp("received", t)
    return msg


def _control(sock: zmq.Socket, worker: Worker) -> None:
    while True:
        try:
            raw = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            msg = decode(raw)
        except WireError as exc:
            worker.bad.warning("bad control message dropped: %s", exc)
            continue
        if msg.kind == Kind.CONTROL and msg.meta.get("cmd") == "reset":
            sid = msg.meta.get("stream_id")
            worker.reset(int(sid) if isinstance(sid, int) else None)
            log.info("video score reset (stream %s)", sid if sid is not None else "all")


# --------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", required=True, action="append",
                   help="frames address to subscribe to (repeat for several sources)")
    p.add_argument("--results", required=True, help="address to publish results on")
    p.add_argument("--control", default=None, help="address to bind for CONTROL (reset)")
    p.add_argument("--status", default=None, help="supervisor heartbeat address")
    p.add_argument("--restarted", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--standby", action="store_true",
                   help="load the model, then wait for SIGUSR1 before serving (hot spare)")
    add_worker_arguments(p)


def run(args: argparse.Namespace) -> int:
    stop = install_stop_handler()
    cfg = WorkerConfig(frames_addrs=tuple(args.frames), results_addr=args.results,
                       bundle=resolve_bundle(args.bundle), backend=args.backend,
                       threads=args.threads, control_addr=args.control,
                       status_addr=args.status, seg=args.seg, seg_hz=args.seg_hz,
                       mc_samples=args.mc_samples, restarted=args.restarted,
                       frame_model=args.frame_model)
    go = None
    if args.standby:
        go = threading.Event()
        signal.signal(signal.SIGUSR1, lambda *_: go.set())
    try:
        return run_worker(cfg, stop, go)
    except engines.BundleError as exc:
        log.error("worker: %s", exc)
        return 2
    except zmq.ZMQError as exc:
        log.error("worker: cannot use address %s / %s (%s)", args.results, args.control, exc)
        return 2
