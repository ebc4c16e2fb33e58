"""Losses comparing a render with one car's mask and photo (all on the pixels of one window)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_iou(alpha: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Soft intersection over union of a silhouette (H, W) in [0, 1] and a mask fraction (H, W)."""
    inter = alpha * mask
    union = alpha + mask - inter
    if weight is not None:
        inter, union = inter * weight, union * weight
    return inter.sum() / union.sum().clamp_min(1e-6)


def silhouette_loss(alpha: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Squared silhouette difference over the mean of the two areas: sum w (alpha - mask)^2 / D.

    D = (sum w mask + sum w alpha) / 2. For hard silhouettes this is 2 (1 - Dice): 0 at alpha = mask,
    2 when they do not overlap, and it stays alpha = mask at the optimum for soft (blurred) silhouettes
    and masks too. Scale-free, so small and large cars weigh alike; near a fit (alpha ~ mask) it equals
    the symmetric difference over the mask's area. Bounded: a render that vanishes (slid behind a
    neighbour, or beside a mask shrunk by the fitted offset) scores the worst, 2, whereas over the mask's
    area alone it scored 1, better than a poor overlap with a render larger than the mask.
    """
    w = torch.ones_like(mask) if weight is None else weight
    return (w * (alpha - mask) ** 2).sum() / silhouette_norm(alpha, mask, w).clamp_min(1.0)


def silhouette_norm(alpha: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The silhouette term's denominator: the mean of the mask's and the render's (weighted) areas."""
    return 0.5 * ((weight * mask).sum() + (weight * alpha).sum())


def fit_albedo(shading: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """Robust closed-form albedo (detached): the median ratio photo / shading over the pixels given.

    The median ignores the parts the uniform-albedo model gets wrong (windows, tyres, lights).
    """
    s = shading.detach()
    ok = s > 1e-3
    if not bool(ok.any()):
        return torch.ones((), dtype=shading.dtype)
    return (photo[ok] / s[ok]).median().clamp(0.02, 5.0)


def grayscale_loss(image: torch.Tensor, covered: torch.Tensor, photo: torch.Tensor, region: torch.Tensor,
                   delta: float, trim: float = 0.0) -> torch.Tensor:
    """Mean Huber difference (in units of delta) between rendered shading and photo over `region`.

    image: shading rendered over a black background (albedo 1); covered: (H, W) bool pixels of this
    car in the render; region: the eroded mask (fixed, so the term cannot shrink the car onto its
    best-fitting pixels: mask pixels the render leaves uncovered stay black and cost). The albedo is
    fitted robustly on the covered part. trim > 0 leaves out that fraction of the largest residuals
    (the parts a uniform albedo cannot explain: windows, tyres, lights).
    """
    if not bool(region.any()):
        return image.sum() * 0.0
    both = region & covered
    albedo = fit_albedo(image[both], photo[both]) if bool(both.any()) else torch.ones((), dtype=image.dtype)
    residual = F.huber_loss(albedo * image[region], photo[region], delta=delta, reduction="none") / delta
    if trim > 0:
        keep = max(1, int(round((1.0 - trim) * residual.numel())))
        residual = torch.topk(residual, keep, largest=False, sorted=False).values
    return residual.mean()


def image_gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences (d/dx, d/dy) of an (H, W) image on its interior pixels, each (H-2, W-2)."""
    gx = 0.5 * (image[1:-1, 2:] - image[1:-1, :-2])
    gy = 0.5 * (image[2:, 1:-1] - image[:-2, 1:-1])
    return gx, gy


def _length(gx: torch.Tensor, gy: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """|(gx, gy)|, smooth at zero (flat regions give zero gradients, not NaN)."""
    return torch.sqrt(gx * gx + gy * gy + eps * eps) - eps


def edge_alignment_loss(alpha: torch.Tensor, photo_edges: torch.Tensor, weight: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """1 - mean photo edge strength across the rendered outline, in [0, 1].

    alpha: the car's (blurred) silhouette (H, W); photo_edges: (2, H-2, W-2) the photo's gradient
    direction scaled by its strength in [0, 1] on the interior pixels (see `edge_map`); weight:
    (H, W) or None. Along the outline, |grad alpha . edges| is large where the photo has a strong
    edge parallel to the outline (either sign of contrast); dividing by sum |grad alpha| makes it a
    mean over the outline, so a bigger car is not favoured. The detector's mask never enters: its
    dilation or erosion, which biases the silhouette term's scale (depth), does not bias this one.
    Bounded, so it cannot outweigh a silhouette gone wrong.
    """
    gx, gy = image_gradient(alpha)
    strength = _length(gx, gy)
    along = (gx * photo_edges[0] + gy * photo_edges[1]).abs()
    if weight is not None:
        inner = weight[1:-1, 1:-1]
        along, strength = along * inner, strength * inner
    return 1.0 - along.sum() / strength.sum().clamp_min(1e-6)


def edge_map(photo: torch.Tensor, outline: torch.Tensor) -> torch.Tensor:
    """The photo's edges (2, H-2, W-2): gradient direction times strength, saturating at 1.

    Strength is |grad photo| over the contrast typical of the car's outline (the median across
    `outline`, the detector mask's blurred edge), capped at 1: a strong internal edge (windows,
    shadows) counts no more than the car's own outline.
    """
    gx, gy = image_gradient(photo)
    magnitude = _length(gx, gy)
    band = _length(*image_gradient(outline))
    selected = magnitude[band > 0.5 * band.max()] if bool((band > 0).any()) else magnitude.flatten()
    contrast = max(float(selected.median()) if selected.numel() else 0.0, 1e-3)
    scale = 1.0 / (contrast * (magnitude / contrast).clamp_min(1.0))
    return torch.stack([gx * scale, gy * scale])
