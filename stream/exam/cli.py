"""``pleura exam FOLDER``: score a folder of zone-named clips into one exam and report per patient.

Clips are named ``<patient>_<zone>[_<take>].<ext>`` (:mod:`stream.exam.naming`, read from the
right, so a patient ID may hold '_'); a clip whose name breaks the rule is reported with the
rule and skipped, the rest are still scored. Without ``--protocol`` each patient's protocol is
the one of its existing exam if the zones fit it, else the smallest that holds every zone named
(printed, with the others they fit: ``R3`` is "lateral" in 6 zones, "lateral upper" in 8+). Each
clip is scored by the offline path of ``pleura score`` (same numbers). Per patient it writes::

    OUT/<patient>/exam.json                     the exam record (reopenable, continuable)
    OUT/<patient>/scores/<zone>-<clip>.json     each clip's pleura-score document
    OUT/<patient>/<patient>-report.{json,csv,pdf}

Running it again on the same folder updates the exams: clips are re-scored, clinician
overrides already in ``exam.json`` are kept. Exit code: 0 when every clip was named and scored,
1 when any was skipped or failed (the reports are still written), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path

from engines.scorer import load_scorer
from stream.exam.naming import (
    ClipName,
    fitting_protocols,
    infer_protocol,
    is_clip_candidate,
    parse_clip_name,
    rule_text,
)
from stream.exam.protocols import PROTOCOLS
from stream.exam.report import write_reports
from stream.exam.scoring import model_info, score_into_exam
from stream.exam.store import EXAM_FILE, Exam, ExamError, check_date
from stream.score import VIDEO_SUFFIXES

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Score a folder of zone-named clips into one exam per patient (the "
                          "pleura score path) and write its report: PDF, JSON and CSV.")
    parser.epilog = f"Naming rule: {rule_text(None)}. Details: docs/exam.md."
    parser.add_argument("folder", metavar="FOLDER",
                        help="folder of clips named <patient>_<zone>[_<take>].<ext>, e.g. "
                             "P07_R1.mp4, P07_L3.dcm (an image folder P07_R2/ is one clip)")
    parser.add_argument("--protocol", type=int, default=None, choices=PROTOCOLS,
                        help="zones in the exam protocol (default: inferred from the zone "
                             "names, the smallest protocol that holds them all; printed)")
    parser.add_argument("--out", default=None, metavar="REPORT",
                        help="folder for the exams and reports (default FOLDER/reports)")
    parser.add_argument("--date", default=None,
                        help="exam date, YYYY-MM-DD (default: today)")
    parser.add_argument("--bundle", default=None, help="model bundle (default: the shipped one)")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime or tensorrt")
    parser.add_argument("--threads", type=int, default=None, help="CPU inference threads")
    parser.add_argument("--batch", type=int, default=16, help="frames per inference batch")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="score at most this many frames per clip")
    parser.add_argument("--no-pdf", action="store_true", help="write JSON and CSV only")


def collect(folder: Path, protocol: int | None) -> tuple[dict[str, list[ClipName]], list[str]]:
    """Clips of ``folder`` grouped by patient, and the problems of badly named ones
    (``protocol`` None: a zone of any protocol is accepted)."""
    by_patient: dict[str, list[ClipName]] = defaultdict(list)
    problems: list[str] = []
    for entry in sorted(folder.iterdir()):
        if not is_clip_candidate(entry, VIDEO_SUFFIXES):
            continue
        try:
            name = parse_clip_name(entry, protocol)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        by_patient[name.patient].append(name)
    return dict(by_patient), problems


def run(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"pleura exam: {folder} is not a folder; give the folder that holds the clips")
        return 2
    out = Path(args.out) if args.out else folder / "reports"
    if args.date is not None:
        try:
            check_date(args.date)
        except ExamError as exc:
            print(f"pleura exam: --date: {exc}")
            return 2
    by_patient, problems = collect(folder, args.protocol)
    for p in problems:
        print(f"SKIPPED {p}")
    if not by_patient:
        print(f"pleura exam: no clip in {folder} follows the naming rule "
              f"{rule_text(args.protocol)}")
        return 1
    protocols = {}
    for patient, clips in sorted(by_patient.items()):
        protocols[patient] = choose_protocol(out / patient, patient, clips, args.protocol)
    try:
        scorer = load_scorer(args.bundle, backend=args.backend, threads=args.threads)
    except (ValueError, OSError) as exc:
        print(f"pleura exam: {exc}")
        return 2
    model = model_info(scorer, args.bundle)
    failed = 0
    for patient, clips in sorted(by_patient.items()):
        protocol = protocols[patient]
        try:
            exam = Exam.create(out / patient, patient, protocol, args.date, exist_ok=True)
        except ExamError as exc:
            print(f"pleura exam: {patient}: {exc}")
            failed += len(clips)
            continue
        if exam.protocol != protocol:
            print(f"pleura exam: {out / patient} holds a {exam.protocol}-zone exam; run with "
                  f"--protocol {exam.protocol} or another --out")
            failed += len(clips)
            continue
        exam.set_model(model, save=False)
        for c in sorted(clips, key=lambda c: (c.zone, c.take)):
            entry, _ = score_into_exam(exam, c.zone, c.path, scorer, args.batch,
                                       args.max_frames, save=False)
            state = (f"video score {entry.video_score} ({entry.n_frames} frames)" if entry.ok
                     else f"FAILED ({entry.error})")
            failed += not entry.ok
            print(f"{patient} {c.zone} {c.path.name}: {state}")
        exam.save()
        paths = write_reports(exam, exam.folder, pdf=not args.no_pdf)
        print(f"{patient}: {exam.total_text()} -> {', '.join(str(p) for p in paths.values())}")
    return 1 if problems or failed else 0


def choose_protocol(folder: Path, patient: str, clips: list[ClipName],
                    given: int | None) -> int:
    """The protocol of one patient's exam: ``given``; else that of the exam already in
    ``folder`` when every zone named fits it; else the smallest protocol that holds them
    (:func:`stream.exam.naming.infer_protocol`). Prints which, and why, unless given.
    """
    if given is not None:
        return given
    names = {c.zone for c in clips}
    try:
        existing = Exam.open(folder).protocol if (folder / EXAM_FILE).is_file() else None
    except ExamError:
        existing = None
    if existing is not None and existing in fitting_protocols(names):
        print(f"{patient}: protocol {existing} zones, that of the exam already in {folder} "
              f"(pass --protocol N to choose another, with another --out)")
        return existing
    protocol, why = infer_protocol(names)
    print(f"{patient}: {why}")
    return protocol
