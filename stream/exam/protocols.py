"""Lung-ultrasound exam protocols: the one table of chest zones (6, 8, 12 or 14 zones).

Every protocol names its zones per hemithorax, ``R1..Rn`` and ``L1..Ln``, numbered the same
way in every protocol: anterior before lateral before posterior, upper before lower. So ``R1``
(right anterior upper) and ``R4`` (right lateral lower) mean the same place in the 8-, 12- and
14-zone protocols, and a clip named ``P07_R4.mp4`` keeps its meaning when the protocol grows.

Sources (the zone boundaries are the papers'; the numbering above is pleura's):

- **6 zones** (3 per side: anterior upper, anterior lower, lateral): Brat et al., "Lung
  ultrasonography score to evaluate oxygenation and surfactant need in neonates treated with
  continuous positive airway pressure", JAMA Pediatrics 169(8), 2015.
- **8 zones** (4 per side: anterior upper/lower, lateral upper/basal; the parasternal, anterior
  and posterior axillary lines as borders): Volpicelli et al., "International evidence-based
  recommendations for point-of-care lung ultrasound", Intensive Care Med 38, 2012.
- **12 zones** (6 per side: anterior, lateral, posterior, each upper and lower): Bouhemad et
  al. / Soummer et al., "Ultrasound assessment of lung aeration loss during a successful
  weaning trial predicts postextubation distress", Crit Care Med 40(7), 2012 (LUS score 0-36).
- **14 zones** (7 per side: posterior basal, middle and upper along the paravertebral line;
  lateral basal and middle on the mid-axillary line; anterior lower and upper on the
  mid-clavicular line): Soldati et al., "Proposal for international standardization of the use
  of lung ultrasound for patients with COVID-19", J Ultrasound Med 39(7), 2020 (score 0-42).
  Soldati numbers the areas 1-14 in scanning order; pleura's ``R1..R7 / L1..L7`` is a renaming.

Positions are for drawing the chest map: ``view`` is ``"front"`` (patient facing the viewer,
so the patient's right is on the viewer's left) or ``"back"``; ``x``, ``y`` in [0, 1] across
the drawn torso, left to right and top to bottom as the viewer sees it. Lateral zones sit at
the outer edge of the front view.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Zone:
    """One chest zone of a protocol.

    Attributes:
        id: ``"R1"``..``"R7"`` / ``"L1"``..``"L7"``.
        name: clinical name, e.g. ``"right anterior upper"``.
        view: ``"front"`` or ``"back"`` (chest-map drawing).
        x: horizontal position in [0, 1] on that view, as the viewer sees it.
        y: vertical position in [0, 1], top to bottom.
    """

    id: str
    name: str
    view: str
    x: float
    y: float

    @property
    def side(self) -> str:
        return "right" if self.id.startswith("R") else "left"


# Per-side zone kinds: (suffix of the name, view, x for the RIGHT side, y). The left side
# mirrors x on the front view; on the back view the patient's right is on the viewer's right.
_KINDS: dict[str, tuple[str, str, float, float]] = {
    "anterior upper": ("anterior upper", "front", 0.30, 0.28),
    "anterior lower": ("anterior lower", "front", 0.30, 0.62),
    "lateral": ("lateral", "front", 0.06, 0.45),
    "lateral upper": ("lateral upper", "front", 0.06, 0.35),
    "lateral lower": ("lateral lower", "front", 0.06, 0.70),
    "posterior upper": ("posterior upper", "back", 0.70, 0.22),
    "posterior middle": ("posterior middle", "back", 0.70, 0.48),
    "posterior lower": ("posterior lower", "back", 0.70, 0.74),
}

PROTOCOL_KINDS: dict[int, tuple[str, ...]] = {
    6: ("anterior upper", "anterior lower", "lateral"),
    8: ("anterior upper", "anterior lower", "lateral upper", "lateral lower"),
    12: ("anterior upper", "anterior lower", "lateral upper", "lateral lower",
         "posterior upper", "posterior lower"),
    14: ("anterior upper", "anterior lower", "lateral upper", "lateral lower",
         "posterior upper", "posterior middle", "posterior lower"),
}
"""THE table: protocol (number of zones) -> the zone kinds of one side, in R1.. order."""

PROTOCOL_SOURCES: dict[int, str] = {
    6: "Brat et al., JAMA Pediatr 2015 (6 areas)",
    8: "Volpicelli et al., Intensive Care Med 2012 (8 regions)",
    12: "Soummer/Bouhemad et al., Crit Care Med 2012 (12 regions, score 0-36)",
    14: "Soldati et al., J Ultrasound Med 2020 (14 areas, score 0-42)",
}
PROTOCOLS = tuple(PROTOCOL_KINDS)


def _zone(side: str, number: int, kind: str) -> Zone:
    label, view, x, y = _KINDS[kind]
    if side == "L":
        x = 1.0 - x
    full = ("right " if side == "R" else "left ") + label
    return Zone(f"{side}{number}", full, view, x, y)


def zones(protocol: int) -> tuple[Zone, ...]:
    """The zones of a protocol, right side first (``R1..Rn, L1..Ln``).

    Raises:
        ValueError: an unknown protocol, naming the valid ones.
    """
    try:
        kinds = PROTOCOL_KINDS[int(protocol)]
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"unknown exam protocol {protocol!r}; valid: "
                         f"{', '.join(str(p) for p in PROTOCOLS)} zones") from None
    return tuple(_zone(side, i, kind) for side in "RL" for i, kind in enumerate(kinds, 1))


def zone_ids(protocol: int) -> tuple[str, ...]:
    return tuple(z.id for z in zones(protocol))


def max_score(protocol: int) -> int:
    """Highest patient LUS score of a protocol: 3 per zone (42 for 14 zones)."""
    return 3 * len(zones(protocol))
