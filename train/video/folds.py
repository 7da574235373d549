"""Cross-validation folds split by patient (Roy et al. 2020: 5-fold CV of the video stage)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np


def patient_folds(patient_of: Mapping[str, str], k: int = 5, seed: int = 0) -> list[list[str]]:
    """Split videos into k test folds so that no patient is in two folds.

    Patients are shuffled with ``seed`` and assigned, largest first, to the fold that has the
    fewest videos so far (balanced fold sizes, deterministic).

    Args:
        patient_of: video_id -> patient_id.
        k: number of folds (>= 2).
        seed: shuffling seed.

    Returns:
        k lists of video ids (each sorted); fold i is the test set of split i, the other folds
        its training set.

    Raises:
        ValueError: if there are fewer patients than folds (reduce ``--folds``).
    """
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    videos_of: dict[str, list[str]] = defaultdict(list)
    for vid, pid in patient_of.items():
        videos_of[pid].append(vid)
    patients = sorted(videos_of)
    if len(patients) < k:
        raise ValueError(f"{len(patients)} patients cannot fill {k} patient-disjoint folds; "
                         f"use --folds {max(2, len(patients))} or a dataset with more patients")
    rng = np.random.default_rng(seed)
    patients = [patients[i] for i in rng.permutation(len(patients))]
    patients.sort(key=lambda p: -len(videos_of[p]))  # stable: ties keep the shuffled order
    folds: list[list[str]] = [[] for _ in range(k)]
    for pid in patients:
        target = min(range(k), key=lambda i: (len(folds[i]), i))
        folds[target].extend(videos_of[pid])
    return [sorted(f) for f in folds]
