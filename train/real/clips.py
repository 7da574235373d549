"""Real clips for training: the licence filter, recording/patient groups and grouped folds.

Licence rule (``shared/data/README.md``): a clip may be trained on only if its licence allows
adaptation (CC BY, CC BY-NC, CC BY-NC-SA; not ND, not missing or unknown). A bundle trained on
any non-commercial clip is a *research bundle* carrying the most restrictive licence among its
training clips.

Group rule (clips cut from one recording, one patient or one source page never sit in two
folds). Two clips are in the same group when they share either key:

1. **source page**: the ``source_url`` up to its first space or ``#`` (so "…/covid19 (Day1)"
   and "…/covid19 (Day4)" — one patient on four days — are one page), when it is a URL;
2. **recording family**: the file name without extension, class prefix
   (``Reg``/``Cov``/``Pneu``/``Vir``…), the suffixes ``_crop``/``_trimmed`` and trailing
   clip/part indices (``_v2``, ``_clip3``, ``_vid1``, ``-2``, ``Image002`` → ``Image``,
   ``Image_181206`` → ``Image``), lower-cased. So ``…sonographic_v1…v5`` are one family,
   ``Reg_pat1Image_132943`` … are patient 1, ``Reg_northumbria_0409_set3_vid1/2`` are set 3.

Groups are the connected components of "shares a key" (union-find), over every clip of the
manifest (labelled or not), so an unlabelled clip used for an auxiliary task never leaks a
test group into training.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from train.data.pocus import PocusClip

ADAPTABLE = ("CC BY", "CC BY-NC", "CC BY-NC-SA")
"""Licence families that allow adaptation (training). ND and unknown licences are refused."""
RESTRICTIVENESS = {"own": 0, "CC BY": 0, "CC BY-NC": 1, "CC BY-NC-SA": 2}


class LicenceError(ValueError):
    """A clip whose licence does not allow training."""


def licence_family(licence: str) -> str | None:
    """``"CC BY-NC-SA 4.0"`` → ``"CC BY-NC-SA"``; None for anything not CC BY[-NC][-SA]."""
    m = re.fullmatch(r"\s*(CC BY(?:-NC)?(?:-SA)?)(?:\s+\d+(?:\.\d+)?)?\s*", licence or "")
    return m.group(1) if m else None


def check_trainable(clip: PocusClip) -> str:
    """The clip's licence family, or raise.

    Raises:
        LicenceError: for an ND, missing or unknown licence, naming the clip.
    """
    if clip.license.startswith("own data"):
        return "own"
    fam = licence_family(clip.license)
    if fam is None:
        raise LicenceError(
            f"{clip.filename}: licence {clip.license!r} does not allow training (only CC BY, "
            "CC BY-NC and CC BY-NC-SA clips may be trained on; ND, missing or unknown "
            "licences never: shared/data/README.md)")
    return fam


def trainable(clips: Iterable[PocusClip], commercial_only: bool = False) -> list[PocusClip]:
    """Clips that may be trained on (all must pass :func:`check_trainable`).

    Args:
        commercial_only: keep only ``commercial_use`` clips (CC BY), for a bundle without the
            non-commercial restriction.

    Raises:
        LicenceError: if any clip's licence forbids training (never silently dropped).
    """
    out = []
    for c in clips:
        check_trainable(c)
        if commercial_only and not c.commercial_use:
            continue
        out.append(c)
    return out


def bundle_licence(clips: Sequence[PocusClip]) -> str:
    """The most restrictive licence among training clips (the bundle's licence)."""
    if not clips:
        return "none (simulated data only)"
    worst = max(clips, key=lambda c: (RESTRICTIVENESS[check_trainable(c)], c.license))
    return worst.license


_PREFIX = re.compile(r"^(reg|cov|pneu|vir|vir_or_pneu)[-_]", re.I)
_SUFFIXES = re.compile(r"([-_](crop|trimmed))+$", re.I)
_NUMBER = re.compile(r"[-_ ]?\(?\+?\d+\)?$")
_INDEX_WORD = re.compile(r"[-_](v|clip|vid|part|mov|file)$", re.I)


def family_key(filename: str) -> str:
    """The recording family of a file name (see the module docstring)."""
    stem = filename.rsplit(".", 1)[0]
    stem = _PREFIX.sub("", stem)
    prev = None
    while prev != stem:
        prev = stem
        stem = _SUFFIXES.sub("", stem)
        cut = _INDEX_WORD.sub("", _NUMBER.sub("", stem))
        stem = cut or stem
    return "family:" + stem.lower()


def page_key(source_url: str) -> str | None:
    """The source page of a URL (up to the first space or '#'), or None if not a URL."""
    url = (source_url or "").strip()
    if url.startswith("group:"):  # an explicit group id (own clips' label CSV)
        return url
    if not url.lower().startswith(("http://", "https://")):
        return None
    url = re.split(r"[\s#]", url, maxsplit=1)[0].rstrip("/")
    return "page:" + re.sub(r"^https?://(www\.)?", "", url.lower())


def components(items: Iterable[str], joined: Iterable[Iterable[str]]) -> dict[str, str]:
    """item → the smallest item of its connected component, where each member of ``joined``
    connects its items (union-find)."""
    parent = {i: i for i in items}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for members in joined:
        first, *rest = list(members)
        for m in rest:
            ra, rb = find(first), find(m)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return {i: find(i) for i in parent}


def clip_groups(clips: Sequence[PocusClip]) -> dict[str, str]:
    """file name → group id (the smallest file name of its group), by the module's rule."""
    by_key: dict[str, list[str]] = defaultdict(list)
    for c in clips:
        by_key[family_key(c.filename)].append(c.filename)
        page = page_key(c.source_url)
        if page:
            by_key[page].append(c.filename)
    return components((c.filename for c in clips), by_key.values())


@dataclass(frozen=True)
class Folds:
    """Grouped folds: ``fold_of[file]`` is 0..k-1 for every clip of the manifest, or -1 for a
    clip that is trained on in every fold and never tested (a source without labelled clips,
    :func:`train.real.sources.source_folds`). ``names``: what each fold holds out, where the
    folds have names (the source of a leave-one-source-out fold)."""

    k: int
    fold_of: dict[str, int]
    group_of: dict[str, str]
    names: tuple[str, ...] = ()

    def test(self, fold: int) -> list[str]:
        return sorted(f for f, i in self.fold_of.items() if i == fold)

    def train(self, fold: int) -> list[str]:
        return sorted(f for f, i in self.fold_of.items() if i != fold)


def grouped_folds(clips: Sequence[PocusClip], k: int = 5, seed: int = 0) -> Folds:
    """Stratified grouped k folds: whole groups to folds, balancing severity counts.

    Greedy: groups in decreasing order of labelled size (ties shuffled by ``seed``), each to
    the fold where it most reduces the squared deviation of per-class counts from their
    targets (total / k), then the fold with fewer clips.
    """
    group_of = clip_groups(clips)
    members: dict[str, list[PocusClip]] = defaultdict(list)
    for c in clips:
        members[group_of[c.filename]].append(c)
    rng = np.random.default_rng(seed)
    names = list(members)
    rng.shuffle(names)

    def hist(cs: Iterable[PocusClip]) -> np.ndarray:
        h = np.zeros(5)
        for c in cs:
            h[c.severity if c.severity is not None else 4] += 1
        return h

    names.sort(key=lambda g: -hist(members[g])[:4].sum())
    target = hist(clips) / k
    counts = np.zeros((k, 5))
    fold_of_group: dict[str, int] = {}
    for g in names:
        h = hist(members[g])
        cost = [(_deviation(counts[i] + h, target) - _deviation(counts[i], target),
                 counts[i].sum(), i) for i in range(k)]
        best = min(cost)[2]
        counts[best] += h
        fold_of_group[g] = best
    return Folds(k, {c.filename: fold_of_group[group_of[c.filename]] for c in clips}, group_of)


def _deviation(h: np.ndarray, target: np.ndarray) -> float:
    """Squared deviation from the fold targets; labelled classes weigh 10x unlabelled clips."""
    d = (h - target) ** 2
    return float(10.0 * d[:4].sum() + d[4])


def describe_groups(clips: Sequence[PocusClip], folds: Folds) -> list[dict]:
    """One row per group: id, fold, clips, severities (for docs and the run folder)."""
    by_group: dict[str, list[PocusClip]] = defaultdict(list)
    for c in clips:
        by_group[folds.group_of[c.filename]].append(c)
    rows = []
    for g, cs in sorted(by_group.items(), key=lambda kv: (folds.fold_of[kv[1][0].filename], kv[0])):
        sev = Counter(c.severity for c in cs if c.severity is not None)
        rows.append({"group": g, "fold": folds.fold_of[cs[0].filename],
                     "clips": sorted(c.filename for c in cs),
                     "severity_counts": {str(s): n for s, n in sorted(sev.items())}})
    return rows
