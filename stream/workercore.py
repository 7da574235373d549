"""The worker without sockets: its scorer, per-stream state, fault counters and the CONTROL
semantics. :mod:`stream.worker` runs it as a process (and documents the behaviour: faults,
bounded per-stream state, source states, CONTROL messages).

Frames are scored by the one scoring core, :mod:`engines.scorer` (prepare -> infer -> locate
-> running score), the same functions ``pleura score`` and the report tab use; this module
adds the wire checks, the per-stream table and the RESULT fields (:mod:`stream.result_fields`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

import engines
from engines.base import FrameOutput
from engines.findings import findings_dict
from engines.scorer import Prepared, Scorer, infer, load_scorer, locate, prepare_frame, score_frame
from stream.config import WorkerConfig  # the worker's options: one definition, there
from stream.messages import COMMANDS, FrameMeta, Result, SourceState, encode_result
from stream.ratelog import RateLimitedLog
from stream.result_fields import (
    crops_meta,
    display_boxes,
    display_frame,
    mask_display_meta,
    timing_ms,
    video_meta,
)
from stream.seglane import SegLane
from stream.sources import scheme_of
from stream.streamtable import StreamState, StreamTable
from stream.wire import Kind, Message

log = logging.getLogger("stream.worker")  # one logger name for the worker process's lines

R = TypeVar("R")

MAX_FRAME_SIDE = 8192
"""Largest frame side the worker scores (8K video is 7680 wide); larger frames are dropped."""
STATUS_HW = (240, 320)
"""Size of the blank display frame of a status result (a source that sent no frame yet)."""
DROPS = ("garbage", "old_version", "bad_meta", "bad_frame", "errors", "control", "reset_refused")
"""Kinds of dropped messages counted in the heartbeat's ``dropped`` (plus evicted / expired)."""
OTHER_COMMANDS = tuple(c for c in COMMANDS if c != "reset")
RESEND_IDLE_S = 2.0
"""A stream that published nothing for this long has its last result (its source state) sent
again: a page that connected later, or lost the one status message to CONFLATE, learns that
the source failed even when no capture is left to repeat it (issue #29)."""
WHOLE_PASS_START = 3
"""A file pass whose first scored frame has an index above this started late (the worker
joined mid-file): its video score is not kept as the whole clip's."""
"""CONTROL commands meant for capture or the supervisor (the worker ignores them)."""


class Worker:
    """Owns the engine and the per-stream state; :func:`run_worker` owns the sockets and loop."""

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
        remote = {"address": cfg.serve_address} if cfg.backend == "ray" else {}  # pleura serve
        self.scorer: Scorer = load_scorer(bundle, backend=cfg.backend, threads=threads, **opts,
                                          **remote)
        gpu = getattr(self.engine, "device", "cpu") != "cpu"
        mode = cfg.seg if cfg.seg != "auto" else ("inline" if gpu else "lane")
        self.seg_mode = mode if bundle.has_segmentation() else "off"
        self.seg: SegLane | None = None
        if self.seg_mode != "off":
            seg_engine = (self.engine if self.seg_mode == "inline" else
                          engines.create_engine(bundle, backend=cfg.backend, threads=1,
                                                **remote))
            self.seg = SegLane(seg_engine, bundle.seg_spec, cfg.seg_hz, cfg.mc_samples,
                               threaded=self.seg_mode == "lane")
        self.streams: StreamTable[StreamState] = StreamTable(cfg.max_streams, cfg.stream_idle_s)
        self.faults = {k: RateLimitedLog(log) for k in DROPS}
        self.faults["old_version"] = RateLimitedLog(log, every_s=60.0, burst=1)  # one clear line
        self.resets = RateLimitedLog(log)
        self.processed = 0
        self.skipped = 0
        self.state_changed: set[int] = set()
        # per stream: the video score of the last complete pass of a looped file (shown while
        # the file plays again, so the score does not restart on every loop) and the index of
        # the first frame scored in the current pass
        self.whole_clip: dict[int, dict[str, Any]] = {}
        self.pass_start: dict[int, int | None] = {}
        self.sent_at: dict[int, float] = {}  # monotonic time of each stream's last RESULT

    @property
    def engine(self) -> Any:
        """The frame model's engine (the scorer's)."""
        return self.scorer.engine

    @property
    def backend(self) -> str:
        """RESULT ``backend``: the engine's name; with ``ray``, where frames are scored now
        (the Serve application, or the local fallback and why; the page shows it)."""
        eng = self.engine
        return eng.describe() if getattr(eng, "backend", "") == "ray" else self.scorer.backend

    @property
    def spec(self) -> Any:
        """The frame model's preprocessing spec (the bundle's)."""
        return self.scorer.spec

    # ------------------------------------------------------------------ faults
    def drop(self, kind: str, msg: str, *args) -> None:
        """Count a dropped message of ``kind`` (one of :data:`DROPS`) and log it, rate-limited."""
        self.faults[kind].warning(msg, *args)

    def guard(self, what: str, fn: Callable[..., R], *args: Any) -> R | None:
        """``fn(*args)``; any exception is logged (rate-limited), counted, and gives None."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - one message must never end the worker
            self.drop("errors", "%s failed, dropped (%s: %.300s)", what, type(exc).__name__,
                      str(exc))
            log.debug("%s failed", what, exc_info=True)
            return None

    def dropped(self) -> dict[str, int]:
        """Counts for the heartbeat: messages dropped by kind, stream states forgotten."""
        out = {k: v.count for k, v in self.faults.items()}
        out.update(evicted=self.streams.evicted, expired=self.streams.expired)
        return out

    # ------------------------------------------------------------------ per-stream state
    def _new_state(self, sid: int, key: tuple | None) -> StreamState:
        st = StreamState(self.scorer.running(), restarted=self.cfg.restarted, key=key)
        self._forget(self.streams.put(sid, st))
        self.whole_clip.pop(sid, None)
        self.pass_start.pop(sid, None)
        return st

    def _forget(self, sids: list[int]) -> None:
        for sid in sids:
            self.state_changed.discard(sid)
            self.whole_clip.pop(sid, None)
            self.pass_start.pop(sid, None)
            self.sent_at.pop(sid, None)
            if self.seg is not None:
                self.seg.forget(sid)

    def expire(self) -> None:
        """Forget streams idle for longer than ``stream_idle_s``."""
        self._forget(self.streams.expire())

    def _state(self, msg: Message, fm: FrameMeta) -> StreamState:
        st = self.streams.get(msg.stream_id)
        key = fm.video_key
        if st is None:
            st = self._new_state(msg.stream_id, key)
        elif st.key is None:  # known from a source-state message only: its first frame
            st.key = key
        elif key != st.key:  # new source, restarted capture or a new loop pass: new video
            self._end_pass(msg.stream_id, st, key)
            st.reset_video()
            st.restarted, st.key, st.last_seq, st.mask_seq = False, key, None, None
            if self.seg is not None:
                self.seg.forget(msg.stream_id)
        if self.pass_start.get(msg.stream_id) is None:
            self.pass_start[msg.stream_id] = fm.index
        st.source, st.source_state = fm.source, fm.state
        if st.last_seq is not None and msg.seq > st.last_seq + 1:
            gap = msg.seq - st.last_seq - 1
            st.skipped += gap
            self.skipped += gap
        st.last_seq = msg.seq
        return st

    def _end_pass(self, sid: int, st: StreamState, key: tuple) -> None:
        """A stream's video changes: when it is the same file starting its next loop pass
        (only the epoch moved) after a pass scored from its start, keep that pass's video
        score as the whole clip's (``complete``); anything else forgets it."""
        start = self.pass_start.pop(sid, None)
        same_file = (st.key is not None and tuple(key[:2]) == tuple(st.key[:2])
                     and scheme_of(str(key[0] or "")) == "file")
        if not same_file:
            self.whole_clip.pop(sid, None)
        elif start is not None and start <= WHOLE_PASS_START and st.running.n_frames > 0:
            clip = video_meta(st.running, st.restarted)
            found = st.running.findings
            if found is not None:
                clip["findings"] = found.summary()
            self.whole_clip[sid] = {**clip, "complete": True}

    def on_source_state(self, sid: int, ss: SourceState) -> None:
        """A capture's source-state message: remember it; the loop then publishes it."""
        if ss.state is None:
            return
        st = self.streams.get(sid)
        if st is None:
            st = self._new_state(sid, key=None)
        if ss.source is not None:
            st.source = ss.source
        st.source_state, st.source_detail = ss.state, ss.detail
        if st.last_result is None or st.last_result.meta.get("status_only"):
            st.last_result = self._status_result(sid, st, ss.detail)
        self.state_changed.add(sid)

    def _status_result(self, sid: int, st: StreamState, detail: str) -> Message:
        """A RESULT for a stream without a scored frame yet: its state, no scores."""
        now = time.time()
        meta = Result(seq=st.last_seq or 0, stream_id=sid, source=st.source,
                      status_only=True, source_detail=detail, display_hw=list(STATUS_HW),
                      skipped=st.skipped, backend=self.backend, bundle=self.bundle.name,
                      worker_pid=os.getpid()).to_json()
        res = Message(Kind.RESULT, sid, st.last_seq or 0, meta=meta,
                      array=np.zeros(STATUS_HW, np.uint8))
        res.stamp("grabbed", now)
        res.stamp("published", now)
        return res

    def mark_idle(self, now: float | None = None) -> None:
        """Queue a re-send (:meth:`state_updates`) of every stream that published nothing for
        :data:`RESEND_IDLE_S`."""
        now = time.monotonic() if now is None else now
        for sid in self.streams.ids():
            if now - self.sent_at.get(sid, -math.inf) >= RESEND_IDLE_S:
                self.state_changed.add(sid)

    def state_updates(self) -> list[bytes]:
        """Encoded re-sends of the last result of every stream whose source state changed
        (or that went quiet: :meth:`mark_idle`)."""
        out = []
        for sid in sorted(self.state_changed):
            st = self.streams.peek(sid)
            if st is None or st.last_result is None:
                continue
            st.last_result.meta["source_state"] = st.source_state
            st.last_result.meta["source_detail"] = st.source_detail  # why (the page says it)
            if st.source:  # the source the state is about (a new one may have failed)
                st.last_result.meta["source"] = st.source
            st.last_result.meta["resent"] = True  # not a new frame (stats skip it)
            raw = self.guard("re-sending a result", encode_result, st.last_result)
            if raw is not None:
                out.append(raw)
                self.sent_at[sid] = time.monotonic()
        self.state_changed.clear()
        return out

    def reset(self, stream_id: int | None = None) -> None:
        """Restart the video score of one stream (or all)."""
        for sid in self.streams.ids():
            if stream_id is None or sid == stream_id:
                st = self.streams.peek(sid)
                st.reset_video()
                st.restarted = False
                self.whole_clip.pop(sid, None)  # the running score starts again, shown
                self.pass_start[sid] = None

    def control(self, meta: dict[str, Any]) -> None:
        """Apply one CONTROL message (semantics in the module docstring)."""
        cmd = meta.get("cmd")
        if isinstance(cmd, str) and cmd in OTHER_COMMANDS:
            return
        if cmd != "reset":
            self.drop("control", "unknown control command %.40r ignored", cmd)
            return
        sid = meta.get("stream_id")
        if sid is None:
            self.reset()
            self.resets.info("video score reset (all %d streams)", len(self.streams))
        elif isinstance(sid, bool) or not isinstance(sid, int):
            self.drop("reset_refused", "reset refused: stream_id must be an integer, got %.40r",
                      sid)
        elif sid not in self.streams:
            self.drop("reset_refused", "reset refused: unknown stream %d (streams held: %.80s)",
                      sid, str(self.streams.ids()))
        else:
            self.reset(sid)
            self.resets.info("video score reset (stream %d)", sid)

    # ------------------------------------------------------------------ the scoring path
    def _prepare(self, msg: Message) -> Prepared | None:
        """Stage 1 of the core for one FRAME, after the wire checks; None (counted) if bad."""
        a = msg.array
        if a is None or a.dtype != np.uint8 or a.ndim not in (2, 3):
            self.drop("bad_frame", "stream %d seq %d: bad frame dropped (FRAME without a "
                      "(H, W[, C]) uint8 image)", msg.stream_id, msg.seq)
            return None
        if max(a.shape[:2]) > MAX_FRAME_SIDE or min(a.shape[:2]) < 1:
            self.drop("bad_frame", "stream %d seq %d: bad frame dropped (size %s; sides must "
                      "be 1..%d)", msg.stream_id, msg.seq, a.shape, MAX_FRAME_SIDE)
            return None
        try:
            return prepare_frame(a, self.scorer.spec)
        except ValueError as exc:
            self.drop("bad_frame", "stream %d seq %d: bad frame dropped (%s)", msg.stream_id,
                      msg.seq, exc)
            return None

    def process(self, batch: list[tuple[Message, FrameMeta]]
                ) -> list[tuple[Message, StreamState]]:
        """Score a batch of FRAME messages (at most one per stream) -> (RESULT, its stream)."""
        items = []
        for msg, fm in batch:
            got = self.guard(f"preparing stream {msg.stream_id} seq {msg.seq}", self._prepare,
                             msg)
            if got is not None:
                items.append((msg, fm, got))
        if not items:
            return []
        t_pre = time.time()
        out = infer(self.scorer, np.stack([p.x for _msg, _fm, p in items]))
        t_inf = time.time()
        boxes, whole = locate(out, [p.lb for _msg, _fm, p in items], self.scorer.in_hw)
        results = []
        for i, (msg, fm, p) in enumerate(items):
            res = self.guard(f"scoring stream {msg.stream_id} seq {msg.seq}", self._result,
                             msg, fm, p, (out, boxes, whole), i, len(items))
            if res is not None:
                res[0].stamp("preprocessed", t_pre)
                res[0].stamp("inferred", t_inf)
                results.append(res)
        return results

    def _result(self, msg: Message, fm: FrameMeta, p: Prepared,
                scored: tuple[FrameOutput, np.ndarray, np.ndarray], i: int,
                n: int) -> tuple[Message, StreamState] | None:
        """Stage 4 of the core for frame ``i`` of the batch (``scored``: the batch's engine
        outputs, source-pixel boxes and whole-frame flags), then its RESULT."""
        st = self._state(msg, fm)
        out, boxes, whole = scored
        try:
            fs = score_frame(st.running, out, i, boxes, whole)
        except ValueError as exc:  # nothing changed in the stream's state
            self.drop("bad_frame", "stream %d seq %d: %s", msg.stream_id, msg.seq, exc)
            return None
        grey = p.grey
        disp, scale = display_frame(grey, self.cfg.display_max)
        meta = {
            "seq": msg.seq, "stream_id": msg.stream_id, "source": st.source,
            "frame_hw": list(grey.shape[:2]), "display_hw": list(disp.shape[:2]),
            "index": fm.index, "pts_s": fm.pts_s,
            "roi": list(fm.roi) if fm.roi else None,
            "full_hw": list(fm.full_hw) if fm.full_hw else None,
            "probs": fs.probs.tolist(), "score": fs.score,
            "boxes": [] if fs.whole_frame else display_boxes(fs.boxes, scale),
            "crops": crops_meta(fs.whole_frame, self.bundle.crops_localise,
                                self.bundle.localisation_note),
            "mask_display": mask_display_meta(*self.bundle.masks_shown),
            "video": video_meta(st.running, st.restarted),
            "findings": None, "batch": n, "worker_pid": os.getpid(),
            "capture_session": fm.session, "capture_sent": fm.sent,
        }
        found = st.running.findings
        if fs.findings is not None and found is not None:
            meta["findings"] = findings_dict(found.names, fs.findings)
            meta["video"]["findings"] = found.summary()
        clip = self.whole_clip.get(msg.stream_id)
        if clip is not None:  # a looped file: its last complete pass, not a restarted score
            meta["video"] = {**clip, "pass_frames": st.running.n_frames}
        masks: dict[str, np.ndarray] = {}  # the RESULT's "mask" / "unc" arrays
        if self.seg is not None:
            self.seg.submit(msg.stream_id, msg.seq, grey, disp.shape[:2])
            got = self.seg.latest(msg.stream_id)
            if got is not None:
                masks, meta["mask_seq"] = got.arrays, got.seq
                if got.seq != st.mask_seq:  # count each mask's cost once
                    meta["seg_ms"], st.mask_seq = got.ms, got.seq
        res = Message(Kind.RESULT, msg.stream_id, msg.seq, stamps=msg.stamps.copy(),
                      meta=meta, array=disp, arrays=masks)
        st.processed += 1
        self.processed += 1
        now = time.time()
        if st.last_t:
            dt = now - st.last_t
            st.fps = 1.0 / dt if st.fps == 0 else 0.9 * st.fps + 0.1 / max(dt, 1e-6)
        st.last_t = now
        return res, st

    def finish(self, res: Message, st: StreamState) -> bytes:
        """Add the last stamps and worker-wide fields, encode; remember it as the last result."""
        res.stamp("postprocessed", time.time())
        res.meta.update({"skipped": st.skipped, "fps": round(st.fps, 2),
                         "backend": self.backend, "bundle": self.bundle.name,
                         "source_state": st.source_state})
        res.stamp("published", time.time())
        res.meta["timing_ms"] = timing_ms(res.stamps)
        if "seg_ms" in res.meta:
            res.meta["timing_ms"]["seg"] = res.meta.pop("seg_ms")
        res.meta["latency_ms"] = round((res.at("published") - res.at("grabbed")) * 1000.0, 3)
        raw = encode_result(res)  # checked against stream.messages.Result
        st.last_result = res
        self.sent_at[res.stream_id] = time.monotonic()
        return raw

    def close(self) -> None:
        if self.seg is not None:
            self.seg.close()
        self.scorer.close()
