"""The clip naming rule of ``pleura exam``: the file name carries patient and zone.

    <patient>_<zone>[_<take>].<ext>      e.g.  P07_R1.mp4   P07_L3.dcm   P07_R1_2.mp4

- ``patient``: the pseudonym / ID: letters, digits and '-' (no '_', which separates the parts);
- ``zone``: ``R`` or ``L`` (patient's right / left) and the zone number on that side, as in
  :mod:`stream.exam.protocols` (``R1..R7`` for 14 zones, ``R1..R6`` for 12, ``R1..R4`` for 8,
  ``R1..R3`` for 6); case does not matter;
- ``take`` (optional): letters, digits or '-' to tell several clips of one zone apart; a zone
  with several clips is scored by the highest of their video scores;
- ``ext``: a video file (mp4, mov, avi, mpeg, mkv, gif, ...), a DICOM cine (``.dcm``), or no
  extension for a folder of PNG/JPEG frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from stream.exam.protocols import zone_ids
from stream.sources import IMAGE_SUFFIXES
from stream.sources.dicom import DICOM_SUFFIXES

RULE = ("<patient>_<zone>[_<take>].<ext>, e.g. P07_R1.mp4 or P07_L3_2.dcm: patient = letters, "
        "digits or '-'; zone = R or L and the zone number of that side in the protocol "
        "(R1..R{n}, L1..L{n}); take = optional label for a second clip of the zone")
_NAME_RE = re.compile(r"^(?P<patient>[A-Za-z0-9][A-Za-z0-9-]{0,63})_(?P<zone>[RLrl][0-9]{1,2})"
                      r"(?:_(?P<take>[A-Za-z0-9-]{1,32}))?$")


@dataclass(frozen=True)
class ClipName:
    path: Path
    patient: str
    zone: str
    take: str = ""


def rule_text(protocol: int) -> str:
    return RULE.format(n=len(zone_ids(protocol)) // 2)


def parse_clip_name(path: str | Path, protocol: int) -> ClipName:
    """Patient, zone and take of a clip from its name.

    Raises:
        ValueError: the name does not follow the rule, or names a zone the protocol lacks;
            the message quotes the rule.
    """
    p = Path(path)
    stem = p.name if p.is_dir() else p.stem
    m = _NAME_RE.match(stem)
    if m is None:
        raise ValueError(f"{p.name}: name does not follow the naming rule "
                         f"{rule_text(protocol)}")
    zone = m["zone"].upper()
    valid = zone_ids(protocol)
    if zone not in valid:
        raise ValueError(f"{p.name}: zone {zone} is not in the {protocol}-zone protocol "
                         f"(R1..R{len(valid) // 2}, L1..L{len(valid) // 2}); naming rule: "
                         f"{rule_text(protocol)}")
    return ClipName(p, m["patient"], zone, m["take"] or "")


def is_clip_candidate(path: Path, video_suffixes: tuple[str, ...]) -> bool:
    """Whether a folder entry looks like a clip at all (other files are ignored, not errors)."""
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return any(f.suffix.lower() in IMAGE_SUFFIXES for f in path.iterdir())
    return path.suffix.lower() in video_suffixes + DICOM_SUFFIXES
