"""The per-material shading term (issue 12, item 4): one albedo a material class, not one a car.

The plain grayscale term (`losses.grayscale_loss`) paints a car with one albedo, so its dark glass
and tyres (about 30 % of a real car) are residuals wherever the pose is. Here the car is rendered
with one colour channel per material class (body, glass, dark; `lighting/materials.py`): a vertex
carries the area-weighted share of each class among its faces, interpolated across each face by
barycentrics (which are differentiable), so channel k of the render is "shading x share of class
k". The albedo of each class is then fitted in closed form per render (median ratio, detached, like
`fit_albedo`) and the prediction is sum_k a_k channel_k. Where a face bridges two classes the share
changes continuously with the pose, so window lines and wheel arches (internal edges) move the
prediction too, not only the outline and the normals.

Other cars of the window are rendered black in every channel: their pixels inside this car's mask
cost like uncovered mask pixels (a constant for a fixed neighbour).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nmrlight.refine.lighting.fit import face_classes
from nmrlight.refine.lighting.materials import CLASS_NAMES
from nmrlight.scene import MeshObject

CLASSES = len(CLASS_NAMES)
MIN_CLASS_PIXELS = 8     # a class seen on fewer pixels borrows the albedo of all pixels together

_SHARE_CACHE: dict[tuple, torch.Tensor] = {}


def vertex_class_shares(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V, K) area-weighted share of each material class among the faces around each vertex.

    Rows sum to 1 (an isolated vertex counts as body). Cached by the mesh's content: the refinement
    renders the same mesh hundreds of times.
    """
    v = vertices.detach()
    key = (tuple(v.shape), tuple(faces.shape), str(v.dtype), hash(v.cpu().numpy().tobytes()),
           hash(faces.detach().cpu().numpy().tobytes()))
    cached = _SHARE_CACHE.get(key)
    if cached is not None:
        return cached
    tri = v[faces]
    area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=1)
    onehot = F.one_hot(face_classes(vertices, faces), CLASSES).to(v.dtype) * area[:, None].clamp_min(1e-12)
    shares = torch.zeros(len(v), CLASSES, dtype=v.dtype)
    for corner in range(3):
        shares.index_add_(0, faces[:, corner], onehot)
    total = shares.sum(1, keepdim=True)
    shares = torch.where(total > 0, shares / total.clamp_min(1e-30), F.one_hot(torch.zeros(len(v), dtype=torch.long),
                                                                          CLASSES).to(v.dtype))
    if len(_SHARE_CACHE) > 256:
        _SHARE_CACHE.clear()
    _SHARE_CACHE[key] = shares
    return shares


def material_objects(target: MeshObject, neighbours: list[MeshObject]) -> list[MeshObject]:
    """The target painted with its class shares (K channels) and the neighbours painted black."""
    shares = vertex_class_shares(target.vertices, target.faces).to(target.vertices.dtype)
    painted = MeshObject(target.vertices, target.faces, target.rotation, target.translation, albedo=shares)
    black = torch.zeros(CLASSES, dtype=target.vertices.dtype)
    return [painted] + [MeshObject(n.vertices, n.faces, n.rotation, n.translation, albedo=black) for n in neighbours]


def fit_class_albedo(channels: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """Robust closed-form albedo of each class (K,), detached: the median ratio photo / shading over
    the pixels where that class dominates.

    channels: (K, N) the rendered shading x class share of N covered pixels; photo: (N,). A class
    with fewer than MIN_CLASS_PIXELS pixels gets the median ratio of all pixels.
    """
    c = channels.detach()
    shading = c.sum(0)
    ok = shading > 1e-3
    if not bool(ok.any()):
        return torch.ones(c.shape[0], dtype=c.dtype)
    ratio = photo[ok] / shading[ok]
    overall = ratio.median()
    dominant = c[:, ok].argmax(0)
    share = c[:, ok].max(0).values / shading[ok]
    out = []
    for k in range(c.shape[0]):
        sel = (dominant == k) & (share > 0.5)
        out.append(ratio[sel].median() if int(sel.sum()) >= MIN_CLASS_PIXELS else overall)
    return torch.stack(out).clamp(0.02, 5.0)


def material_grayscale_loss(channels: torch.Tensor, covered: torch.Tensor, photo: torch.Tensor,
                            region: torch.Tensor, delta: float, trim: float = 0.0) -> torch.Tensor:
    """Mean Huber difference (units of delta) over `region` between sum_k a_k channels[k] and the photo.

    channels: (K, H, W) shading rendered with the class shares as colours (`material_objects`) over
    a black background; covered: (H, W) bool pixels of this car; region: the fixed eroded mask (mask
    pixels the render leaves uncovered predict black and cost). trim as in `grayscale_loss`.
    """
    if not bool(region.any()):
        return channels.sum() * 0.0
    both = region & covered
    k = channels.shape[0]
    if bool(both.any()):
        albedo = fit_class_albedo(channels[:, both], photo[both])
    else:
        albedo = torch.ones(k, dtype=channels.dtype)
    predicted = (albedo[:, None] * channels[:, region]).sum(0)
    residual = F.huber_loss(predicted, photo[region], delta=delta, reduction="none") / delta
    if trim > 0:
        keep = max(1, int(round((1.0 - trim) * residual.numel())))
        residual = torch.topk(residual, keep, largest=False, sorted=False).values
    return residual.mean()

