"""The bedside exam: protocols of chest zones, the exam record, scoring, reports, recording.

- :mod:`stream.exam.protocols`: the one table of zones (6, 8, 12, 14) with names, positions
  and sources;
- :mod:`stream.exam.store`: ``exam.json`` (atomic), zone and patient LUS scores, overrides;
- :mod:`stream.exam.naming`: the ``<patient>_<zone>[_<take>].<ext>`` rule of ``pleura exam``;
- :mod:`stream.exam.scoring`: a clip into a zone through ``pleura score``'s path;
- :mod:`stream.exam.report` / :mod:`stream.exam.pdf`: JSON, CSV and PDF reports;
- :mod:`stream.exam.clipwriter` / :mod:`stream.exam.record`: zone clips as MP4 + JSONL,
  crash-safe, and recording a zone from any source;
- :mod:`stream.exam.cli`: ``pleura exam FOLDER``. The page's Exam tab is :mod:`ui.exam`.
"""

from stream.exam.protocols import PROTOCOLS, Zone, zones
from stream.exam.store import Exam, ExamError

__all__ = ["PROTOCOLS", "Exam", "ExamError", "Zone", "zones"]
