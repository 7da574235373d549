"""The 0-3 lung-ultrasound score of Soldati et al. (J Ultrasound Med 39(7), 2020) in words.

Shared by the report and the page, so the meaning of a score is written once.
"""

from __future__ import annotations

SCORE_SHORT: tuple[str, ...] = (
    "0 - normal: A-lines",
    "1 - B-lines, indented pleura",
    "2 - broken pleura, small consolidations",
    "3 - white lung",
)
SCORE_AERATION: tuple[str, ...] = (
    "normally aerated",
    "mild loss of aeration",
    "moderate loss of aeration",
    "severe loss of aeration",
)
"""What each score means for the lung (the end of each :data:`SCORE_MEANING`)."""
SCORE_MEANING: tuple[str, ...] = (
    "Continuous, regular pleural line with horizontal artefacts (A-lines): normally aerated.",
    "Indented pleural line with vertical white areas below it (separate or coalescent B-lines):"
    " mild loss of aeration.",
    "Broken pleural line with small to large dark consolidated areas below the break and white "
    "areas below them: moderate loss of aeration.",
    "Dense, widely extended white lung, with or without larger consolidations: severe loss of "
    "aeration.",
)
SCORE_RGB: tuple[tuple[int, int, int], ...] = (
    (40, 120, 255),   # 0 blue
    (255, 220, 0),    # 1 yellow
    (255, 130, 0),    # 2 orange
    (230, 0, 90),     # 3 magenta-red
)
"""Same colours as the live page's masks and bars (``ui.overlay.SCORE_RGB``)."""
UNSCORED_RGB = (200, 200, 200)
NOTICE = ("Research software, not a medical device. Scores are model estimates for research "
          "use; they do not replace a clinician's reading of the images.")
