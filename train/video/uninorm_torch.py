"""The learnable twin of :mod:`engines.uninorm` (torch), used only for training e.

Same min-uninorm as the runtime (product t-norm, probabilistic-sum t-conorm; Roy et al. 2020,
PAPER.md section 2)::

    U_e(a, b) = a*b/e                          if a, b <= e
              = a + b - e - (a-e)(b-e)/(1-e)   if a, b >= e
              = min(a, b)                      otherwise

and the closed-form aggregation of N frames (see :func:`engines.uninorm.uninorm_reduce`):
``e * prod(x/e, x < e)`` if any value is below e, else ``1 - (1-e) * prod((1-x)/(1-e), x > e)``.
Every division is guarded *inside* ``torch.where`` so neither the value nor the gradient is
ever NaN at e or probabilities of exactly 0 or 1. A parity test checks it against numpy.
"""

from __future__ import annotations

import torch
from torch import nn

_EPS = 1e-12


def uninorm_torch(a: torch.Tensor, b: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Elementwise min-uninorm, differentiable in a, b and e (shapes broadcast)."""
    a, b, e = torch.broadcast_tensors(a, b, e)
    lo = (a <= e) & (b <= e)
    hi = (a >= e) & (b >= e)
    # Floors keep the unselected branch finite, so its zero gradient never becomes 0 * inf.
    e_lo = e.clamp_min(_EPS)
    one_me = (1 - e).clamp_min(_EPS)
    u_lo = a * b / e_lo
    u_hi = a + b - e - (a - e) * (b - e) / one_me
    out = torch.where(lo, u_lo, torch.where(hi, u_hi, torch.minimum(a, b)))
    out = torch.where(b == e, a, torch.where(a == e, b, out))
    return out.clamp(0.0, 1.0)


def uninorm_reduce_torch(P: torch.Tensor, e: torch.Tensor,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Aggregate padded batches of videos at once, in closed form.

    Args:
        P: (V, N, C) frame probabilities in [0, 1], padded along N.
        e: (C,) neutral elements in [0, 1].
        mask: (V, N) bool, True for real frames (None: all real). Padding is neutral.

    Returns:
        (V, C) aggregated values, differentiable in ``e`` (and ``P``).
    """
    if P.dim() != 3:
        raise ValueError(
            f"uninorm_reduce_torch expects (V, N, C) probabilities; got {tuple(P.shape)}")
    e = e.to(P.dtype)
    real = torch.ones(P.shape[:2], dtype=torch.bool, device=P.device) if mask is None else mask
    real = real[..., None]
    low = torch.lt(P, e) & real
    high = torch.gt(P, e) & real
    e_lo = e.clamp_min(_EPS)
    one_me = (1 - e).clamp_min(_EPS)
    # Ratios only where selected; elsewhere the neutral factor 1 (no 0/0 in the graph).
    r_lo = torch.where(low, P / e_lo, torch.ones_like(P))
    r_hi = torch.where(high, (1 - P) / one_me, torch.ones_like(P))
    agg_lo = e * r_lo.prod(dim=1)
    agg_hi = 1 - (1 - e) * r_hi.prod(dim=1)
    any_lo, any_hi = low.any(dim=1), high.any(dim=1)
    out = torch.where(any_lo, agg_lo, torch.where(any_hi, agg_hi, e.expand_as(agg_lo)))
    return out.clamp(0.0, 1.0)


def uninorm_reduce_log_torch(P: torch.Tensor, e: torch.Tensor,
                             mask: torch.Tensor | None = None, floor: float = 1e-30
                             ) -> torch.Tensor:
    """Natural log of :func:`uninorm_reduce_torch`, computed without forming the products.

    ``log U = log e + sum_{x<e} (log x - log e)`` when any value is below e, else
    ``log(1 - (1-e) prod_{x>e} (1-x)/(1-e))``, else ``log e``. Stays finite (and keeps its
    gradient) for long videos whose aggregate underflows to 0 in float64; probabilities are
    floored at ``floor`` inside the log.

    Returns:
        (V, C) log aggregates.
    """
    e = e.to(P.dtype)
    real = torch.ones(P.shape[:2], dtype=torch.bool, device=P.device) if mask is None else mask
    real = real[..., None]
    low = torch.lt(P, e) & real
    high = torch.gt(P, e) & real
    log_e = torch.log(e.clamp_min(floor))
    log_lo = log_e + torch.where(low, torch.log(P.clamp_min(floor)) - log_e,
                                 torch.zeros_like(P)).sum(dim=1)
    one_me = (1 - e).clamp_min(_EPS)
    r_hi = torch.where(high, (1 - P) / one_me, torch.ones_like(P)).prod(dim=1)
    log_hi = torch.log1p(-((1 - e) * r_hi).clamp(max=1 - 1e-15))
    any_lo, any_hi = low.any(dim=1), high.any(dim=1)
    return torch.where(any_lo, log_lo, torch.where(any_hi, log_hi, log_e.expand_as(log_lo)))


HEADS = ("softmax", "log")
"""Video heads for training: ``softmax`` = softmax(U) (the paper); ``log`` = softmax(log U)."""


class UninormAggregator(nn.Module):
    """Four learnable neutral elements, clamped to [0, 1] in the forward pass and after steps.

    ``forward(P, mask)`` returns the (V, C) logits of the video prediction: with head
    ``softmax`` the aggregated values U themselves (video probabilities = softmax(U), Roy et al.
    2020); with head ``log`` their logarithm (probabilities = U / sum U). Both have the same
    argmax, hence the same video score; ``log`` keeps a useful gradient when every U of a long
    video is nearly 0 and softmax(U) is flat.
    """

    def __init__(self, n_classes: int = 4, init: float = 0.5, head: str = "softmax") -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
        self.head = head
        self.e = nn.Parameter(torch.full((n_classes,), float(init), dtype=torch.float64))

    def forward(self, P: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        e = self.e.clamp(0.0, 1.0)
        if self.head == "log":
            return uninorm_reduce_log_torch(P.to(torch.float64), e, mask)
        return uninorm_reduce_torch(P.to(torch.float64), e, mask)

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp e back into [0, 1] after an optimiser step (projected gradient)."""
        self.e.clamp_(0.0, 1.0)

    def neutral_elements(self) -> list[float]:
        return [float(v) for v in self.e.detach().clamp(0.0, 1.0)]
