"""The exam record: ``exam.json`` in an exam folder, written atomically, reopenable.

An exam is one patient, one date and one protocol (:mod:`stream.exam.protocols`); per zone it
keeps the clip(s) recorded or given for it, each clip's video score (the offline scoring path,
:func:`stream.score_clips.score_clip`, so a clip's score equals ``pleura score`` of that clip),
its findings where the bundle reports them, its key frame, and the clinician's override with a
note (kept beside the model's score, never replacing it in the file).

Scores (Soldati et al. 2020):

- a zone's **model score** is the highest video score among its scored clips (the zone is
  scored by the worst pattern seen in it);
- a zone's **score** is the clinician's override when there is one, else the model score;
- the **patient LUS score** is the sum of the zone scores over the zones that have one,
  reported with "n of N zones" (an incomplete exam is never silently a low score).

Layout::

    EXAM/
      exam.json               this record (schema below, ``schema: pleura-exam``)
      clips/<zone>-<k>.mp4    recorded clips (stream.exam.clipwriter), + .jsonl per-frame results
      scores/<clip>.json      the pleura-score document of each clip (docs/score-json.md)

``exam.json`` is replaced atomically (temporary file, fsync, ``os.replace``), so a crash leaves
either the old or the new record, never a torn one.

**Several writers on one exam** (the page, a second page, ``pleura exam`` re-run on the same
folder) never lose each other's changes. Every change goes through a method
(:meth:`Exam.add_clip`, :meth:`Exam.set_override`, :meth:`Exam.set_model`,
:meth:`Exam.set_note`) that records it as an operation; :meth:`Exam.save` takes an exclusive
lock on ``EXAM/.exam.lock`` (``fcntl.flock``), re-reads ``exam.json``, replays this writer's
pending operations on what is on disk (merge by field: a zone's clips by file, its override,
the model, the note), writes, and adopts the merged record. Two writers that set the same
field: the later save wins, as at a single desk.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stream.exam.protocols import max_score, zone_ids, zones

SCHEMA = "pleura-exam"
SCHEMA_VERSION = 1
EXAM_FILE = "exam.json"
LOCK_FILE = ".exam.lock"
DATE_RULE = "an ISO date YYYY-MM-DD, e.g. 2026-03-14"
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
PATIENT_RULE = ("1-64 letters, digits, '-' or '_', starting with a letter or digit (no spaces, "
                "'/' or '.')")
_PATIENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class ExamError(ValueError):
    """An exam that cannot be created, read or changed; the message says how to fix it."""


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def check_patient(patient: str) -> str:
    """Validate a patient pseudonym / ID (it becomes part of file names).

    Raises:
        ExamError: not matching :data:`PATIENT_RULE`.
    """
    if not isinstance(patient, str) or not _PATIENT_RE.match(patient):
        raise ExamError(f"patient ID {patient!r} is not valid: use {PATIENT_RULE}, e.g. P07; "
                        "use a pseudonym, never the patient's name")
    return patient


def check_date(date: Any) -> str:
    """Validate an exam date (it becomes part of folder names and is shown on the page).

    Raises:
        ExamError: not :data:`DATE_RULE`, or no such day.
    """
    ok = isinstance(date, str) and _DATE_RE.match(date) is not None
    if ok:
        try:
            _dt.date.fromisoformat(date)
        except ValueError:
            ok = False
    if not ok:
        raise ExamError(f"exam date {str(date)[:40]!r} is not valid: use {DATE_RULE}")
    return date


def check_score(score: Any) -> int:
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 3:
        raise ExamError(f"a zone score is an integer 0-3 (Soldati), got {score!r}")
    return score


@dataclass
class ClipRecord:
    """One clip of a zone and its scoring.

    Attributes:
        file: clip path, relative to the exam folder when inside it, else absolute.
        ok: scored without error.
        video_score: 0-3 final video score, None when not scored.
        probs: (4,) final video-score probabilities.
        n_frames: frames scored.
        key_frame: index of the frame that best shows the video score (highest probability
            of that class), for the report.
        key_boxes: the two crop boxes of the key frame, source pixels (2, 4, 2).
        findings: the bundle's findings summary for the clip, when it reports one.
        score_file: the clip's pleura-score JSON, relative to the exam folder.
        error: why scoring failed.
        added: ISO time the clip was added.
        fps: the clip's frame rate, when known.
    """

    file: str
    ok: bool = False
    video_score: int | None = None
    probs: list[float] | None = None
    n_frames: int = 0
    key_frame: int | None = None
    key_boxes: list | None = None
    findings: Any = None
    score_file: str | None = None
    error: str | None = None
    added: str = field(default_factory=now_iso)
    fps: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipRecord:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "file" not in known:
            raise ExamError(f"a clip entry has no 'file': {d!r:.200}")
        return cls(**known)


@dataclass
class Override:
    """The clinician's score for a zone, with a note; the model's score stays recorded."""

    score: int
    note: str = ""
    at: str = field(default_factory=now_iso)


@dataclass
class ZoneRecord:
    clips: list[ClipRecord] = field(default_factory=list)
    override: Override | None = None

    def best_clip(self) -> ClipRecord | None:
        """The scored clip with the highest video score (the latest among equals)."""
        scored = [c for c in self.clips if c.ok and c.video_score is not None]
        if not scored:
            return None
        return max(reversed(scored), key=lambda c: c.video_score)

    @property
    def model_score(self) -> int | None:
        best = self.best_clip()
        return None if best is None else best.video_score

    @property
    def score(self) -> int | None:
        return self.override.score if self.override is not None else self.model_score


@dataclass
class Exam:
    """An exam folder's record. Create with :meth:`create`, reopen with :meth:`open`."""

    folder: Path
    patient: str
    protocol: int
    date: str
    zones: dict[str, ZoneRecord]
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    model: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    _pending: list[Callable[[Exam], None]] = field(default_factory=list, repr=False,
                                                   compare=False)

    # ------------------------------------------------------------------ creation / IO

    @classmethod
    def create(cls, folder: str | Path, patient: str, protocol: int = 14,
               date: str | None = None, exist_ok: bool = False) -> Exam:
        """A new exam in ``folder`` (created); with ``exist_ok`` an existing one is reopened.

        Raises:
            ExamError: bad patient / protocol, or an exam already there (without exist_ok).
        """
        folder = Path(folder)
        # validate everything before the folder is touched or an existing record reopened
        patient = check_patient(patient)
        date = check_date(date or _dt.date.today().isoformat())
        try:
            ids = zone_ids(protocol)
        except ValueError as exc:
            raise ExamError(str(exc)) from None
        if (folder / EXAM_FILE).exists() and not exist_ok:
            raise ExamError(f"{folder} already holds an exam; open it to continue, or "
                            "choose another folder")
        folder.mkdir(parents=True, exist_ok=True)
        with exam_lock(folder):  # two creators at once: one creates, the other reopens
            if (folder / EXAM_FILE).exists():
                if not exist_ok:
                    raise ExamError(f"{folder} already holds an exam; open it to continue, "
                                    "or choose another folder")
                return cls.open(folder)
            exam = cls(folder, patient, int(protocol), date, {z: ZoneRecord() for z in ids})
            exam._write()
        return exam

    @classmethod
    def open(cls, folder: str | Path) -> Exam:
        """Reopen an exam folder to read or continue it.

        Raises:
            ExamError: no exam there, or an ``exam.json`` that is not a pleura exam.
        """
        folder = Path(folder)
        path = folder / EXAM_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ExamError(f"{folder}: no {EXAM_FILE}; not an exam folder (create one with "
                            "a patient ID and protocol)") from None
        except (OSError, ValueError) as exc:
            raise ExamError(f"{path}: cannot be read ({exc})") from None
        return cls.from_dict(folder, doc)

    @classmethod
    def from_dict(cls, folder: Path, doc: dict[str, Any]) -> Exam:
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ExamError(f"{folder / EXAM_FILE}: not a {SCHEMA} record")
        version = doc.get("schema_version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ExamError(f"{folder / EXAM_FILE}: schema_version {version!r:.40} is not an "
                            f"integer; not a record this pleura wrote")
        if version > SCHEMA_VERSION:
            raise ExamError(f"{folder / EXAM_FILE}: schema version {version} is "
                            f"newer than this pleura reads ({SCHEMA_VERSION}); update pleura")
        try:
            protocol = int(doc["protocol"])
            ids = zone_ids(protocol)
            zones_doc = doc.get("zones")
            if not isinstance(zones_doc, dict):
                raise ExamError(f"'zones' must be an object of zone id -> record, got "
                                f"{type(zones_doc).__name__}")
            records: dict[str, ZoneRecord] = {}
            for zid in ids:
                z = zones_doc.get(zid)
                z = {} if z is None else z
                if not isinstance(z, dict):
                    raise ExamError(f"zone {zid}: expected an object, got {type(z).__name__}")
                ov = z.get("override")
                records[zid] = ZoneRecord(
                    [ClipRecord.from_dict(c) for c in z.get("clips", [])],
                    Override(check_score(ov["score"]), str(ov.get("note", "")),
                             str(ov.get("at", ""))) if ov else None)
            return cls(folder, check_patient(doc["patient"]), protocol, check_date(doc["date"]),
                       records, str(doc.get("created", "")), str(doc.get("updated", "")),
                       dict(doc.get("model") or {}), str(doc.get("note", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ExamError):
                raise ExamError(f"{folder / EXAM_FILE}: {exc}") from None
            raise ExamError(f"{folder / EXAM_FILE}: malformed ({type(exc).__name__}: {exc})"
                            ) from None

    def to_dict(self) -> dict[str, Any]:
        total, n, N = self.total()
        return {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "patient": self.patient, "date": self.date, "protocol": self.protocol,
            "created": self.created, "updated": self.updated, "model": self.model,
            "note": self.note,
            "zones": {zid: {"clips": [asdict(c) for c in z.clips],
                            "override": asdict(z.override) if z.override else None,
                            "model_score": z.model_score, "score": z.score}
                      for zid, z in self.zones.items()},
            "total": {"score": total, "n_scored": n, "n_zones": N,
                      "max": max_score(self.protocol)},
        }

    def save(self) -> Path:
        """Merge this writer's changes into ``exam.json`` under the exam's lock and write it
        atomically (tmp + fsync + os.replace); this object then holds the merged record."""
        with exam_lock(self.folder):
            if (self.folder / EXAM_FILE).exists():
                self._adopt(Exam.open(self.folder))
            for op in self._pending:
                op(self)
            self._pending.clear()
            return self._write()

    def refresh(self) -> Exam:
        """Re-read ``exam.json`` (another writer's changes), keeping this writer's unsaved
        changes on top; returns ``self``."""
        with exam_lock(self.folder):
            fresh = Exam.open(self.folder)
        for op in self._pending:
            op(fresh)
        self._adopt(fresh)
        return self

    def _adopt(self, other: Exam) -> None:
        if (other.patient, other.protocol) != (self.patient, self.protocol):
            raise ExamError(f"{self.folder / EXAM_FILE} now holds patient {other.patient}, "
                            f"{other.protocol} zones; it was {self.patient}, {self.protocol} "
                            "zones when opened: not merging into another exam")
        for name in ("date", "zones", "created", "updated", "model", "note"):
            setattr(self, name, getattr(other, name))

    def _write(self) -> Path:
        """Write the record as it is (the caller holds the lock)."""
        self.updated = now_iso()
        for stale in self.folder.glob(f".{EXAM_FILE}.*.tmp"):  # left by a writer that died
            with contextlib.suppress(OSError):
                stale.unlink()
        return write_json_atomic(self.folder / EXAM_FILE, self.to_dict())

    # ------------------------------------------------------------------ changes

    def _zone(self, zone: str) -> ZoneRecord:
        try:
            return self.zones[zone]
        except KeyError:
            raise ExamError(f"zone {zone!r} is not in the {self.protocol}-zone protocol; "
                            f"valid: {', '.join(self.zones)}") from None

    def _change(self, op: Callable[[Exam], None], save: bool) -> None:
        """Apply ``op`` now and keep it to replay on the record on disk at :meth:`save`."""
        op(self)
        self._pending.append(op)
        if save:
            self.save()

    def add_clip(self, zone: str, clip: ClipRecord, save: bool = True) -> None:
        """Add a clip to ``zone``, replacing an earlier entry of the same file."""
        self._zone(zone)

        def op(exam: Exam) -> None:
            z = exam._zone(zone)
            z.clips = [c for c in z.clips if c.file != clip.file] + [clip]
        self._change(op, save)

    def set_override(self, zone: str, score: int | None, note: str = "",
                     save: bool = True) -> None:
        """Set (or with ``score=None`` clear) the clinician's score of a zone."""
        self._zone(zone)
        override = None if score is None else Override(check_score(score), str(note)[:2000])

        def op(exam: Exam) -> None:
            exam._zone(zone).override = override
        self._change(op, save)

    def set_model(self, model: dict[str, Any], save: bool = True) -> None:
        """Record the model that scored the exam's clips (name, bundle, version)."""
        model = dict(model)

        def op(exam: Exam) -> None:
            exam.model = dict(model)
        self._change(op, save)

    def set_note(self, note: str, save: bool = True) -> None:
        """The exam's free-text note."""
        note = str(note)[:4000]

        def op(exam: Exam) -> None:
            exam.note = note
        self._change(op, save)

    # ------------------------------------------------------------------ scores

    def total(self) -> tuple[int, int, int]:
        """(patient LUS score, zones scored, zones in the protocol)."""
        scores = [z.score for z in self.zones.values() if z.score is not None]
        return sum(scores), len(scores), len(self.zones)

    def total_text(self) -> str:
        total, n, N = self.total()
        return f"LUS {total} / {max_score(self.protocol)} ({n} of {N} zones scored)"

    def zone_info(self):
        """(Zone, ZoneRecord) pairs in protocol order."""
        return [(z, self.zones[z.id]) for z in zones(self.protocol)]

    def resolve(self, file: str) -> Path:
        """A clip's path (``file`` relative to the exam folder, or absolute)."""
        p = Path(file)
        return p if p.is_absolute() else self.folder / p

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the exam folder when inside it, else absolute."""
        p = Path(path).resolve()
        try:
            return str(p.relative_to(self.folder.resolve()))
        except ValueError:
            return str(p)


@contextlib.contextmanager
def exam_lock(folder: str | Path) -> Iterator[None]:
    """Hold the exam folder's exclusive lock (``fcntl.flock`` on ``.exam.lock``): one writer
    at a time across threads and processes on this machine."""
    with open(Path(folder) / LOCK_FILE, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write_json_atomic(path: str | Path, doc: Any) -> Path:
    """Write JSON to ``path`` so that a crash leaves the old or the new file, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path
