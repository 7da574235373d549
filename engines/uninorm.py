"""Uninorm aggregation of frame probabilities into a video score (numpy; the runtime uses it).

Roy et al., IEEE TMI 2020, section "Video-based score prediction" (PAPER.md section 2): the
class probabilities of the M frames of a video are aggregated *per class* with a uninorm
U_e whose neutral element e (one per class, in [0, 1]) is learned; a softmax of the four
aggregated values is the video prediction.

pleura uses the *min-uninorm* built from the product t-norm and the probabilistic-sum
t-conorm::

    U_e(a, b) = e * T(a/e, b/e)                                  a, b in [0, e]
              = e + (1 - e) * S((a-e)/(1-e), (b-e)/(1-e))        a, b in [e, 1]
              = min(a, b)                                        otherwise
    T(x, y) = x * y          S(x, y) = x + y - x * y

which simplifies to ``a*b/e`` on the lower block and ``a + b - e - (a-e)(b-e)/(1-e)`` on the
upper block, one division each. U_e is commutative, associative, monotone and has neutral
element e, so a running video score is one U per new frame (:class:`RunningUninorm`, O(1) per
frame) and equals the aggregation of all frames at once (:func:`uninorm_reduce`). Both use the
closed form of the N-ary aggregate with its products kept as sums of logs, so a clip of
hundreds of frames, whose aggregate underflows to 0 in float64, still gets a well-defined
video score (the argmax of the log aggregate, :func:`video_score`).

Divisions are guarded: with e = 0 the lower block is only (0, 0), with e = 1 the upper block is
only (1, 1), so probabilities or neutral elements of exactly 0 or 1 never give NaN or inf.
"""

from __future__ import annotations

import numpy as np

N_CLASSES = 4


def uninorm(a: np.ndarray | float, b: np.ndarray | float, e: np.ndarray | float) -> np.ndarray:
    """Elementwise min-uninorm U_e(a, b) (product t-norm, probabilistic-sum t-conorm).

    Roy et al. 2020, eq. (5)-(6) (PAPER.md section 2)::

        U_e(a, b) = a*b/e                          if a, b <= e
                  = a + b - e - (a-e)(b-e)/(1-e)   if a, b >= e
                  = min(a, b)                      otherwise

    Args:
        a, b: probabilities in [0, 1], any broadcastable shapes.
        e: neutral element(s) in [0, 1], broadcastable against ``a`` and ``b`` (e.g. (C,)).

    Returns:
        float64 array of the broadcast shape, in [0, 1]. ``U(a, e) == a`` exactly.
    """
    a, b, e = np.broadcast_arrays(np.asarray(a, dtype=np.float64),
                                  np.asarray(b, dtype=np.float64),
                                  np.asarray(e, dtype=np.float64))
    lo = (a <= e) & (b <= e)
    hi = (a >= e) & (b >= e)
    # Guarded denominators: where e == 0 (resp. 1) the block is only the point 0 (resp. 1), and
    # the guarded expression gives that point exactly.
    e_lo = np.where(e > 0.0, e, 1.0)
    one_minus_e = np.where(e < 1.0, 1.0 - e, 1.0)
    # Divide only inside each block (where the quotient is bounded), never overflow outside.
    u_lo = np.divide(a * b, e_lo, out=np.zeros_like(a), where=lo)
    u_hi = a + b - e - np.divide((a - e) * (b - e), one_minus_e, out=np.zeros_like(a), where=hi)
    out = np.where(lo, u_lo, np.where(hi, u_hi, np.minimum(a, b)))
    # The neutral element is exact, not merely up to rounding (keeps running == batch).
    out = np.where(b == e, a, np.where(a == e, b, out))
    return np.clip(out, 0.0, 1.0)


def _log_terms(P: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                        np.ndarray]:
    """Sufficient statistics of a set of frames for the closed form (see uninorm_reduce).

    Returns (has_low, log_low, has_high, log_high), each (C,): whether any value is below /
    above e, and the sums of log(x/e) over the low values and of log((1-x)/(1-e)) over the high
    ones (both <= 0; -inf where a value is exactly 0 resp. 1).
    """
    low = np.less(P, e)
    high = np.greater(P, e)
    safe_e = np.where(e > 0.0, e, 1.0)
    with np.errstate(divide="ignore"):  # log(0) = -inf is meant: the aggregate is exactly 0/1
        r_lo = np.log(np.divide(P, safe_e, out=np.ones_like(P), where=low))
        # log1p keeps tiny x exact: log((1-x)/(1-e)) computed as 1-x would round x < 1e-16 away
        r_hi = np.where(high, np.log1p(-np.where(high, P, 0.0)) - np.log1p(-e), 0.0)
    return low.any(axis=0), r_lo.sum(axis=0), high.any(axis=0), r_hi.sum(axis=0)


def _closed_form(has_low: np.ndarray, log_low: np.ndarray, has_high: np.ndarray,
                 log_high: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, log value) of the aggregate from the sufficient statistics; both (C,)."""
    with np.errstate(divide="ignore"):
        log_e = np.log(e)
        # 1 - (1-e) exp(L) as -expm1(L + log(1-e)): exact for values just above a tiny e
        hi_val = -np.expm1(log_high + np.log1p(-np.minimum(e, 1.0)))
        log_val = np.where(has_low, log_e + log_low,
                           np.where(has_high, np.log(np.maximum(hi_val, e)), log_e))
    val = np.where(has_low, e * np.exp(log_low), np.where(has_high, hi_val, e))
    return np.clip(val, 0.0, 1.0), log_val


def uninorm_reduce(P: np.ndarray, e: np.ndarray | float) -> np.ndarray:
    """Aggregate N frames at once: U_e(p_1, ..., p_N) per class, in closed form.

    With L the values below e and H the values above e (values equal to e are neutral):
    if L is not empty, the result is ``e * prod(x / e for x in L)`` (the lower block's t-norm;
    every mixed pair is a min, which the lower aggregate always wins); else if H is not empty
    it is ``1 - (1 - e) * prod((1 - x) / (1 - e) for x in H)`` (the upper block's t-conorm);
    else ``e``. This equals folding :func:`uninorm` over the frames in any order
    (associativity and commutativity, Roy et al. 2020 section 2). Products are summed in the
    log domain; a long clip's lower aggregate underflows to 0 (use
    :func:`uninorm_reduce_log` to compare classes then).

    Args:
        P: (N, C) frame probabilities in [0, 1]; N may be 0.
        e: (C,) neutral elements in [0, 1] (or a scalar).

    Returns:
        (C,) float64 aggregated values in [0, 1]; ``e`` itself when N == 0.

    Raises:
        ValueError: if ``P`` is not 2-D.
    """
    return _reduce(P, e)[0]


def uninorm_reduce_log(P: np.ndarray, e: np.ndarray | float) -> np.ndarray:
    """Natural log of :func:`uninorm_reduce`, exact where the value itself underflows to 0.

    The video *score* is the argmax of this (the same as the argmax of the aggregate whenever
    that is representable): hundreds of frames below e make every class's aggregate 0 in
    float64, but their logs still order the classes.

    Returns:
        (C,) float64 in [-inf, 0].
    """
    return _reduce(P, e)[1]


def _reduce(P: np.ndarray, e: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2:
        raise ValueError(f"uninorm_reduce expects frame probabilities (N, C); got shape {P.shape}")
    e = np.broadcast_to(np.asarray(e, dtype=np.float64), (P.shape[1],))
    return _closed_form(*_log_terms(P, e), e)


def video_probs(agg: np.ndarray) -> np.ndarray:
    """Video prediction: softmax over the classes of the aggregated values (Roy et al. 2020).

    Args:
        agg: (C,) or (V, C) aggregated uninorm values.

    Returns:
        Same shape, float64, rows sum to 1.
    """
    agg = np.asarray(agg, dtype=np.float64)
    z = np.exp(agg - agg.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


video_prediction = video_probs
"""Alias of :func:`video_probs` (the name used in the team brief)."""


def evidence_shares(log_agg: np.ndarray, n_frames: int) -> np.ndarray:
    """Share of the video evidence per class: ``softmax(log_agg / max(n_frames, 1))``.

    The normalised per-frame geometric mean of each class's uninorm aggregate,
    ``agg_c ** (1/N) / sum_k agg_k ** (1/N)``. For one frame the aggregate is the frame itself
    (e is neutral), so the shares are that frame's probabilities; over N frames they do not
    flatten as the aggregate saturates (:func:`video_probs` of a long clip is ~1/C per class,
    Roy et al.'s softmax of values that all underflow to 0) nor turn one-hot as the softmax of
    the log aggregate itself does. Monotone in ``log_agg``, so the argmax is the video score
    (:func:`video_score`, ties to the lowest score).

    Args:
        log_agg: (C,) log aggregate (:func:`uninorm_reduce_log` or
            :attr:`RunningUninorm.log_value`); -inf where the aggregate is exactly 0.
        n_frames: frames aggregated (0 or 1 leave ``log_agg`` unscaled).

    Returns:
        (C,) float64 shares summing to 1 (uniform when every class is -inf).
    """
    z = np.asarray(log_agg, dtype=np.float64).reshape(-1) / max(int(n_frames), 1)
    if not np.isfinite(z).any():
        return np.full(z.shape, 1.0 / max(z.size, 1))
    w = np.exp(z - z[np.isfinite(z)].max())  # exp(-inf) = 0: that class has no evidence
    return w / w.sum()


def check_e(e: np.ndarray | list[float] | float, n_classes: int = N_CLASSES) -> np.ndarray:
    """Validate neutral elements: (C,) finite values in [0, 1] (a scalar is broadcast).

    Raises:
        ValueError: naming what is wrong, e.g. from a bad ``aggregator.json``.
    """
    arr = np.asarray(e, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n_classes, float(arr))
    if arr.shape != (n_classes,):
        raise ValueError(f"uninorm e must have {n_classes} values (one per class); got {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(f"uninorm e must be finite and in [0, 1]; got {arr.tolist()}")
    return arr


class RunningUninorm:
    """Running video score: O(1) time and memory per new frame.

    By associativity the aggregate of frames 1..N is U(aggregate of 1..N-1, p_N) (Roy et al.
    2020: "one U per new frame"). The state kept is the closed form's sufficient statistics
    (whether any value fell below / above e, and the log-products of both blocks), so
    :attr:`value` equals :func:`uninorm_reduce` of all frames so far in any order, and the
    score stays well defined after hundreds of frames, when the value underflows to 0.
    Before the first frame the value is e (the empty aggregation).

    Example::

        agg = RunningUninorm(bundle.uninorm_e)
        for p in frame_probs:           # (4,) each
            value = agg.update(p)
        probs, score = agg.probs, agg.score
    """

    def __init__(self, e: np.ndarray | list[float] | float, n_classes: int = N_CLASSES) -> None:
        self.e = check_e(e, n_classes)
        self.reset()

    def reset(self) -> None:
        """Forget every frame (a new clip or a restarted stream)."""
        c = self.e.shape[0]
        self._has_low = np.zeros(c, dtype=bool)
        self._has_high = np.zeros(c, dtype=bool)
        self._log_low = np.zeros(c)
        self._log_high = np.zeros(c)
        self._value, self._log_value = _closed_form(self._has_low, self._log_low,
                                                    self._has_high, self._log_high, self.e)
        self._n = 0

    def update(self, p: np.ndarray) -> np.ndarray:
        """Aggregate one frame's probabilities.

        Args:
            p: (C,) class probabilities in [0, 1].

        Returns:
            (C,) float64 aggregated values after this frame (a copy).

        Raises:
            ValueError: on a wrong shape or non-finite values; the state is left unchanged,
                so a streaming caller can log and drop the frame.
        """
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        if p.shape != self.e.shape:
            raise ValueError(f"expected {self.e.shape[0]} class probabilities, got shape {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"frame probabilities must be finite; got {p.tolist()}")
        has_low, log_low, has_high, log_high = _log_terms(np.clip(p, 0.0, 1.0)[None], self.e)
        self._has_low |= has_low
        self._has_high |= has_high
        self._log_low += log_low
        self._log_high += log_high
        self._value, self._log_value = _closed_form(self._has_low, self._log_low,
                                                    self._has_high, self._log_high, self.e)
        self._n += 1
        return self._value.copy()

    @property
    def value(self) -> np.ndarray:
        """(C,) aggregated values so far (``e`` before the first frame)."""
        return self._value.copy()

    @property
    def log_value(self) -> np.ndarray:
        """(C,) log of :attr:`value`, exact where the value underflows."""
        return self._log_value.copy()

    @property
    def n_frames(self) -> int:
        return self._n

    @property
    def probs(self) -> np.ndarray:
        """(C,) video class probabilities so far (softmax of :attr:`value`)."""
        return video_probs(self._value)

    @property
    def score(self) -> int:
        """Video score 0..C-1 so far: argmax of the aggregate (compared in the log domain)."""
        return video_score(self._log_value)

    @property
    def evidence(self) -> np.ndarray:
        """(C,) share of the video evidence per class so far (:func:`evidence_shares`)."""
        return evidence_shares(self._log_value, self._n)


def video_score(log_agg: np.ndarray) -> int:
    """Video score from :func:`uninorm_reduce_log` (or :attr:`RunningUninorm.log_value`).

    Ties (e.g. every class exactly 0) go to the lowest score.
    """
    return int(np.argmax(np.asarray(log_agg)))
