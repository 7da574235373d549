"""The clip naming rule of ``pleura exam``: the file name carries patient and zone.

    <patient>_<zone>[_<take>].<ext>      e.g.  P07_R1.mp4   patient_62_L3.dcm   P07_R1_2.mp4

The name is read **from the right**: the zone is the last ``_``-separated part that looks like
a zone, the take (if any) is the one part after it, and everything before it is the patient,
so a patient ID may itself hold ``_`` (``patient_62_R1.mp4``: patient ``patient_62``, zone R1;
the naming of public data sets).

- ``patient``: the pseudonym / ID: letters, digits, '-' and '_', starting with a letter or digit;
- ``zone``: ``R`` or ``L`` (patient's right / left) and the zone number on that side, as in
  :mod:`stream.exam.protocols` (``R1..R7`` for 14 zones, ``R1..R6`` for 12, ``R1..R4`` for 8,
  ``R1..R3`` for 6); case does not matter;
- ``take`` (optional): letters, digits or '-' to tell several clips of one zone apart (not
  itself zone-like: ``P07_R1_R2`` is refused as ambiguous); a zone with several clips is scored
  by the highest of their video scores;
- ``ext``: a video file (mp4, mov, avi, mpeg, mkv, gif, ...), a DICOM cine (``.dcm``), or no
  extension for a folder of PNG/JPEG frames.

The protocol need not be given: :func:`infer_protocol` picks the smallest protocol that holds
every zone named (``pleura exam`` says which it picked and how to choose another).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stream.exam.protocols import PROTOCOLS, zone_ids, zones
from stream.sources import IMAGE_SUFFIXES
from stream.sources.dicom import DICOM_SUFFIXES

RULE = ("<patient>_<zone>[_<take>].<ext>, e.g. P07_R1.mp4, patient_62_L3.dcm or P07_R1_2.mp4: "
        "patient = letters, digits, '-' or '_'; zone = R or L and the zone number of that side "
        "in the protocol (R1..R{n}, L1..L{n}); take = optional label (letters, digits, '-') for "
        "a second clip of the zone")
_ZONE_RE = re.compile(r"^[RLrl][0-9]{1,2}$")
_PATIENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_TAKE_RE = re.compile(r"^[A-Za-z0-9-]{1,32}$")
LARGEST = max(PROTOCOLS)
"""Without a protocol, a zone must exist in the largest one (R1..R7, L1..L7)."""


@dataclass(frozen=True)
class ClipName:
    path: Path
    patient: str
    zone: str
    take: str = ""


def rule_text(protocol: int | None) -> str:
    return RULE.format(n=len(zone_ids(protocol or LARGEST)) // 2)


def _split(stem: str) -> tuple[str, str, str] | str:
    """(patient, zone, take) read from the right, or why the name does not fit."""
    parts = stem.split("_")
    if len(parts) >= 2 and _ZONE_RE.match(parts[-1]):
        if len(parts) >= 3 and _ZONE_RE.match(parts[-2]):
            return (f"both {parts[-2]} and {parts[-1]} look like a zone (name a second take "
                    f"with a label that is not a zone, e.g. {'_'.join(parts[:-1])}_2)")
        patient, zone, take = "_".join(parts[:-1]), parts[-1], ""
    elif len(parts) >= 3 and _ZONE_RE.match(parts[-2]):
        patient, zone, take = "_".join(parts[:-2]), parts[-2], parts[-1]
        if not _TAKE_RE.match(take):
            return f"take {take!r} must be 1-32 letters, digits or '-'"
    else:
        return "no zone (R1, L3, ...) after the patient ID"
    if not _PATIENT_RE.match(patient) or "" in patient.split("_"):
        return (f"patient ID {patient!r} must be 1-64 letters, digits, '-' or single '_', "
                f"starting with a letter or digit")
    return patient, zone.upper(), take


def parse_clip_name(path: str | Path, protocol: int | None = None) -> ClipName:
    """Patient, zone and take of a clip from its name (read from the right).

    Args:
        path: the clip file (or image folder).
        protocol: the exam protocol the zone must belong to; None: any protocol's zone
            (R1..R7 / L1..L7, then :func:`infer_protocol`).

    Raises:
        ValueError: the name does not follow the rule, or names a zone the protocol lacks;
            the message quotes the rule.
    """
    p = Path(path)
    stem = p.name if p.is_dir() else p.stem
    got = _split(stem)
    if isinstance(got, str):
        raise ValueError(f"{p.name}: {got}, so the name does not follow the naming rule "
                         f"{rule_text(protocol)}")
    patient, zone, take = got
    valid = zone_ids(protocol or LARGEST)
    if zone not in valid:
        where = (f"is not in the {protocol}-zone protocol" if protocol else
                 f"is in no protocol (the largest, {LARGEST} zones, has")
        raise ValueError(f"{p.name}: zone {zone} {where} "
                         f"{'(' if protocol else ''}R1..R{len(valid) // 2}, "
                         f"L1..L{len(valid) // 2}); naming rule: {rule_text(protocol)}")
    return ClipName(p, patient, zone, take)


def fitting_protocols(zone_names: Iterable[str]) -> list[int]:
    """The protocols that hold every zone in ``zone_names``, smallest first."""
    want = set(zone_names)
    return [n for n in sorted(PROTOCOLS) if want <= set(zone_ids(n))]


def infer_protocol(zone_names: Iterable[str]) -> tuple[int, str]:
    """The smallest protocol holding every named zone, and a sentence saying so.

    The sentence names the other protocols the names fit and what the highest zone means in
    the one chosen, since ``R3`` is "lateral" in the 6-zone protocol and "lateral upper" in
    the others.

    Raises:
        ValueError: no protocol holds them all (a zone beyond R7 / L7).
    """
    names = sorted(set(zone_names), key=lambda z: (z[0] != "R", int(z[1:])))
    fits = fitting_protocols(names)
    if not fits:
        raise ValueError(f"zones {', '.join(names)} fit no protocol "
                         f"({', '.join(str(p) for p in PROTOCOLS)} zones)")
    chosen = fits[0]
    meaning = {z.id: z.name for z in zones(chosen)}
    top = max(names, key=lambda z: int(z[1:]))
    text = (f"protocol {chosen} zones, inferred from the zone names {', '.join(names)} "
            f"({top} = {meaning[top]})")
    if len(fits) > 1:
        others = [n for n in fits[1:] if {z.id: z.name for z in zones(n)}[top] != meaning[top]]
        text += f"; they also fit {', '.join(str(n) for n in fits[1:])} zones"
        if others:
            other = {z.id: z.name for z in zones(others[0])}[top]
            text += (f" (where {top} is {other} in "
                     f"{', '.join(str(n) for n in others)} zones)")
        text += ": pass --protocol N to choose"
    return chosen, text


def is_clip_candidate(path: Path, video_suffixes: tuple[str, ...]) -> bool:
    """Whether a folder entry looks like a clip at all (other files are ignored, not errors)."""
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return any(f.suffix.lower() in IMAGE_SUFFIXES for f in path.iterdir())
    return path.suffix.lower() in video_suffixes + DICOM_SUFFIXES
