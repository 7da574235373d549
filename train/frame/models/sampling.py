"""Export-friendly affine crops: the sampling grid is a matmul of a constant base grid with θ.

``F.affine_grid`` needs ONNX opset 20; ``base @ θᵀ`` followed by ``grid_sample`` needs only
MatMul and GridSample (opset 16+), which ONNX Runtime and TensorRT's parser both handle
(DESIGN.md, "Model bundle"). Convention is ``affine_grid``'s with ``align_corners=False``:
θ maps output coordinates (u, v) in [-1, 1] to input coordinates (x, y) = θ · (u, v, 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def base_grid(height: int, width: int) -> torch.Tensor:
    """Homogeneous output-pixel centres in normalised coordinates.

    Returns:
        (height * width, 3) float32 rows (u, v, 1), row-major over (y, x), pixel centres at
        ``(2 * i + 1) / n - 1`` (``align_corners=False``).
    """
    ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones(height * width)], dim=1)


def affine_crop(x: torch.Tensor, theta: torch.Tensor, base: torch.Tensor,
                out_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear crop of ``x`` through ``theta`` (Jaderberg et al. 2015; Roy et al. 2020 sec. 1).

    grid = base · θᵀ, i.e. (x, y) = θ · (u, v, 1) for every output pixel (u, v).

    Args:
        x: (B, C, H, W) input.
        theta: (B, 2, 3) transforms.
        base: (h * w, 3) from :func:`base_grid` with ``(h, w) = out_hw``.
        out_hw: output size (h, w).

    Returns:
        (B, C, h, w) crops; outside the input is zero.
    """
    grid = torch.matmul(base.to(theta.dtype), theta.transpose(1, 2))  # (B, h*w, 2)
    grid = grid.reshape(theta.shape[0], out_hw[0], out_hw[1], 2)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def theta_from_params(sigma: torch.Tensor, r: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """θ = [[σ, r₁, τ_α], [r₂, σ, τ_β]] (Roy et al. 2020 eq. 1, rotation/translation/scale).

    Args:
        sigma: (B,) isotropic scale.
        r: (B, 2) off-diagonal terms (r₁, r₂).
        tau: (B, 2) translation (τ_α, τ_β).

    Returns:
        (B, 2, 3).
    """
    row1 = torch.stack([sigma, r[:, 0], tau[:, 0]], dim=1)
    row2 = torch.stack([r[:, 1], sigma, tau[:, 1]], dim=1)
    return torch.stack([row1, row2], dim=1)


def identity_theta(batch: int, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(batch, 2, 3) identity transforms (the whole frame)."""
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype, device=device)
    return eye.expand(batch, 2, 3).contiguous()
