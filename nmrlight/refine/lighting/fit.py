"""Lighting of one photograph from its best-seen cars: ambient, directional, direction, albedos.

Model (NMR, grayscale): I = a_g (l_a + l_d max(0, n . d)) for pixel normals n (camera frame,
two-sided), where g is an albedo group: one per car (`materials="single"`), or one per car and
geometric material class (`"classes"`: body, glass, dark tyres/trim; see materials.py), since one
albedo cannot explain a car that is 30 % glass and tyre. Poses are held fixed: each car is rendered
once for its normals, then the fit is a small tensor problem.

How: for a given (l_a, d) the best albedos are a weighted least-squares ratio in closed form
(variable projection), so only l_a and d are searched: a grid over the sphere and l_a, then Adam
from the best few, inside iteratively reweighted least squares (Huber or Cauchy weights on each
car's residuals scaled by its own MAD): highlights, reflections and cast shadows are outliers.
Cars whose residuals stay far above the others' are dropped and the rest refitted (`agree`).

Scale convention: a_g and (l_a, l_d) can trade a common factor, so we fix l_a + l_d = 1 and let the
albedos carry the brightness. To compare with a true lighting (A, D): l_a = A / (A + D),
l_d = D / (A + D), and a_g = paint_g (A + D). The direction d is a unit vector toward the light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from nmrlight.errors import NmrlightError
from nmrlight.refine.lighting.materials import BODY, CLASS_NAMES, DARK, material_classes
from nmrlight.refine.window import View
from nmrlight.render import render
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting

MATERIAL_MODELS = ("single", "classes")
ROBUST_LOSSES = ("huber", "cauchy")
MIN_PIXELS = 20          # a car with fewer interior pixels says nothing about the light
BLOCK = 16               # side (render pixels) of the blocks the bootstrap resamples


@dataclass
class LightSample:
    """One car's interior pixels: normals (N, 3), photo values (N,), material class and block of each."""

    normals: torch.Tensor
    values: torch.Tensor
    classes: torch.Tensor | None = None   # (N,) long material class (materials.py), None: all body
    blocks: torch.Tensor | None = None    # (N,) long spatial block within the car's window
    index: int = -1                       # the car's row index in its photograph

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class LightFit:
    ambient: float
    directional: float
    direction: tuple[float, float, float]
    albedo: list[float]                   # per sample (car): the body albedo
    loss: float
    class_albedo: list[list[float]] = field(default_factory=list)   # per car: one albedo a class
    used: list[int] = field(default_factory=list)    # positions (in the samples given) of the cars kept
    direction_sd_deg: float | None = None     # block-bootstrap spread of the direction (RMS angle)
    ambient_sd: float | None = None           # ... and of l_a
    consistency_deg: float | None = None      # angle between the lights of two halves of the cars
    consistency_ambient: float | None = None  # |l_a difference| between the halves

    def lighting(self) -> Lighting:
        return Lighting(ambient=self.ambient, directional=self.directional, direction=self.direction)


@dataclass
class FitOptions:
    """How the lighting is fitted (see module docstring)."""

    materials: str = "classes"
    robust: str = "cauchy"
    delta: float = 0.05          # Huber: residual scale in image units
    cauchy_c: float = 2.4        # Cauchy: in MADs of each car's residuals
    rounds: int = 3              # reweighting rounds
    steps: int = 25              # L-BFGS iterations a round
    max_pixels: int = 1500       # per car (evenly spaced): plenty for 4 parameters and a few albedos
    agree: float = 3.0           # drop cars whose robust residual exceeds this x the median car's (0: never)
    bootstrap: int = 0           # block-bootstrap refits for the uncertainty (0: none)
    seed: int = 0
    reclassify: float = 0.75     # pixels darker than this x their car's body albedo (photo / shading) join
                                 # the dark classes, lighter ones the body (0: geometric classes only)
    reclassify_rounds: int = 2
    paint_quantile: float = 0.75  # a car's paint: this quantile of its body pixels' photo / shading
    car_power: float = 1.0       # a car's total weight is (its pixels, at most max_pixels) ** car_power
    other_weight: float = 0.0    # weight of glass and dark pixels relative to body paint (they follow Lambert
                                 # least: glass mirrors the sky, tyres are near black)
    consistency_splits: int = 4  # self-consistency: median angle over this many splits into two halves

    def __post_init__(self) -> None:
        if self.materials not in MATERIAL_MODELS:
            raise NmrlightError(f"lighting materials must be one of {', '.join(MATERIAL_MODELS)}, "
                                f"got {self.materials!r}")
        if self.robust not in ROBUST_LOSSES:
            raise NmrlightError(f"lighting robust loss must be one of {', '.join(ROBUST_LOSSES)}, "
                                f"got {self.robust!r}")
        for name, value, low, high in (("reclassify", self.reclassify, 0.0, 1.0),
                                       ("other_weight", self.other_weight, 0.0, 1.0),
                                       ("car_power", self.car_power, 0.0, 1.0),
                                       ("paint_quantile", self.paint_quantile, 0.0, 1.0)):
            if not low <= value <= high:
                raise NmrlightError(f"lighting {name} must be within [{low}, {high}], got {value!r}")
        if not isinstance(self.consistency_splits, int) or self.consistency_splits < 1:
            raise NmrlightError(f"lighting consistency_splits must be an integer >= 1, got {self.consistency_splits!r}")


_CLASS_CACHE: dict[tuple, torch.Tensor] = {}


def face_classes(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Geometric material class of each face (cached by the mesh's content)."""
    v = vertices.detach().cpu().numpy()
    f = faces.detach().cpu().numpy()
    key = (v.shape, f.shape, hash(v.tobytes()), hash(f.tobytes()))
    if key not in _CLASS_CACHE:
        if len(_CLASS_CACHE) > 256:
            _CLASS_CACHE.clear()
        _CLASS_CACHE[key] = torch.from_numpy(material_classes(v, f))
    return _CLASS_CACHE[key]


def sample_car(vertices: torch.Tensor, faces: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor,
               view: View, neighbours: list[MeshObject] = (), index: int = -1) -> LightSample:
    """Render one car (with its occluders) in `view` and keep its eroded-mask pixels' normals and classes."""
    objects = [MeshObject(vertices, faces, rotation.detach(), translation.detach()), *neighbours]
    with torch.no_grad():
        out = render(Scene(objects), view.camera, None, edges="none", outputs={"normals"})
    region = view.interior & (out.object_id == 0)
    normals = out.normals.permute(1, 2, 0)[region]
    classes = face_classes(vertices, faces)[out.face_id[region]]   # the car is object 0: its faces come first
    rows, cols = torch.nonzero(region, as_tuple=True)
    blocks = (rows // BLOCK) * (view.camera.width // BLOCK + 1) + cols // BLOCK
    return LightSample(normals, view.photo[region], classes, blocks, index)


# --- the fit -------------------------------------------------------------------------------------
@dataclass
class _Problem:
    """All samples' pixels stacked (float64), with their albedo group and car."""

    normals: torch.Tensor
    values: torch.Tensor
    group: torch.Tensor          # (N,) albedo group
    car: torch.Tensor            # (N,) position of the car among the samples
    block: torch.Tensor          # (N,) (car, block) unit for the bootstrap
    base: torch.Tensor           # (N,) 1 / (pixels of its car): every car weighs the same
    groups: int
    cars: int
    classes: int


def _thin(sample: LightSample, most: int) -> LightSample:
    """At most `most` of the sample's pixels, evenly spaced (in raster order)."""
    if len(sample) <= most:
        return sample
    keep = torch.linspace(0, len(sample) - 1, most).round().long()
    classes = None if sample.classes is None else sample.classes[keep]
    blocks = None if sample.blocks is None else sample.blocks[keep]
    return LightSample(sample.normals[keep], sample.values[keep], classes, blocks, sample.index)


def _problem(samples: list[LightSample], materials: str, car_power: float = 0.0) -> _Problem:
    classes = len(CLASS_NAMES) if materials == "classes" else 1
    normals = torch.cat([s.normals for s in samples]).double()
    values = torch.cat([s.values for s in samples]).double()
    car = torch.cat([torch.full((len(s),), k, dtype=torch.long) for k, s in enumerate(samples)])
    if classes > 1:
        cls = torch.cat([s.classes if s.classes is not None else torch.full((len(s),), BODY, dtype=torch.long)
                         for s in samples])
    else:
        cls = torch.zeros(len(values), dtype=torch.long)
    block = torch.cat([(s.blocks if s.blocks is not None else torch.zeros(len(s), dtype=torch.long))
                       for s in samples])
    _, block = torch.unique(car * (int(block.max()) + 1) + block, return_inverse=True)
    counts = torch.bincount(car, minlength=len(samples)).double()
    weight = counts ** (car_power - 1.0)
    return _Problem(normals, values, car * classes + cls, car, block, (weight / weight.mean())[car],
                    len(samples) * classes, len(samples), classes)


def _albedos(p: _Problem, shade: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Closed-form albedo per group: argmin_a sum w (I - a s)^2, a >= 0 (0 for groups without weight)."""
    num = torch.zeros(p.groups, dtype=shade.dtype).index_add(0, p.group, w * p.values * shade)
    den = torch.zeros(p.groups, dtype=shade.dtype).index_add(0, p.group, w * shade * shade)
    return (num / den.clamp_min(1e-12)).clamp_min(0.0)


def _shade(p: _Problem, la: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return la + (1 - la) * F.relu(p.normals @ (d / d.norm().clamp_min(1e-12)))


def _sphere(n: int) -> torch.Tensor:
    """n nearly uniform unit vectors (Fibonacci sphere)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5 ** 0.5) * i
    r = (1 - z * z).sqrt()
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=1)


def _grid_search(p: _Problem, w: torch.Tensor, keep: int = 3) -> list[tuple[float, torch.Tensor]]:
    """The `keep` best (l_a, d) over 256 directions x 7 ambient shares, albedos in closed form."""
    stride = max(1, len(p.values) // 3000)           # a subsample is plenty to rank directions
    normals, values, group, w = p.normals[::stride], p.values[::stride], p.group[::stride], w[::stride]
    dirs = _sphere(256)
    cos = F.relu(normals @ dirs.T)                                        # (N, M)
    wi2 = torch.zeros(p.groups, dtype=torch.float64).index_add(0, group, w * values ** 2)
    results = []
    for la in np.linspace(0.1, 0.9, 7):
        s = la + (1 - la) * cos
        num = torch.zeros(p.groups, s.shape[1], dtype=torch.float64).index_add(0, group, (w * values)[:, None] * s)
        den = torch.zeros(p.groups, s.shape[1], dtype=torch.float64).index_add(0, group, w[:, None] * s * s)
        loss = (wi2[:, None] - num.clamp_min(0) ** 2 / den.clamp_min(1e-12)).sum(0)   # (M,)
        for m in torch.argsort(loss)[:keep].tolist():
            results.append((float(loss[m]), float(la), dirs[m]))
    results.sort(key=lambda r: r[0])
    return [(la, d) for _, la, d in results[:keep]]


def _descend(p: _Problem, w: torch.Tensor, la: float, d: torch.Tensor, steps: int) -> tuple[float, torch.Tensor, float]:
    """L-BFGS on (logit l_a, d) with the albedos in closed form; returns (l_a, unit d, weighted loss)."""
    la = min(max(la, 1e-3), 1 - 1e-3)
    logit = torch.tensor(math.log(la / (1 - la)), dtype=torch.float64, requires_grad=True)
    vec = (d / d.norm()).clone().double().requires_grad_(True)
    total = w.sum().clamp_min(1e-12)

    def objective() -> torch.Tensor:
        s = _shade(p, torch.sigmoid(logit), vec)
        return (w * (p.values - _albedos(p, s, w)[p.group] * s) ** 2).sum() / total

    optimiser = torch.optim.LBFGS([logit, vec], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        loss = objective()
    unit = (vec / vec.norm()).detach()
    return float(torch.sigmoid(logit.detach())), unit, float(loss)


def _residuals(p: _Problem, la: float, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = _shade(p, torch.tensor(la, dtype=torch.float64), d)
    return p.values - _albedos(p, s, p.base)[p.group] * s, s


def _reclassify(p: _Problem, geometric: torch.Tensor, la: float, d: torch.Tensor, threshold: float,
                quantile: float) -> _Problem:
    """Material classes from the pixels themselves, given a light: a pixel whose albedo (photo / shading)
    is below `threshold` x its car's paint is dark (glass if the geometry said glass, else dark), one
    above it is body. The paint is the `quantile` of the albedos of the car's geometric body pixels (an
    upper quantile: a cast shadow may cover half the car, missed windows darken the rest). The
    geometric classes miss part of the windows and tyres and call pillars glass; the ratio tells paint
    from glass, rubber and cast shadow once the light is roughly right."""
    s = _shade(p, torch.tensor(la, dtype=torch.float64), d)
    ratio = p.values / s.clamp_min(1e-6)
    paints = []
    for k in range(p.cars):
        body = (p.car == k) & (geometric == BODY)
        paints.append(torch.quantile(ratio[body], quantile) if bool(body.any()) else ratio[p.car == k].median())
    paint = torch.stack(paints)
    dark = ratio < threshold * paint[p.car]
    cls = torch.where(dark, torch.where(geometric == BODY, torch.full_like(geometric, DARK), geometric),
                      torch.full_like(geometric, BODY))
    return replace(p, group=p.car * p.classes + cls)


def _robust_weights(p: _Problem, residual: torch.Tensor, options: FitOptions) -> torch.Tensor:
    """IRLS weights: Huber on absolute residuals, or Cauchy on residuals over each car's MAD."""
    r = residual.abs()
    if options.robust == "huber":
        return (options.delta / r.clamp_min(1e-12)).clamp(max=1.0)
    scale = torch.zeros(p.cars, dtype=torch.float64)
    for k in range(p.cars):
        rk = r[p.car == k]
        scale[k] = 1.4826 * rk.median() if len(rk) else 1.0
    scale = scale.clamp_min(0.01)   # never below the sensor noise
    return 1.0 / (1.0 + (r / (options.cauchy_c * scale[p.car])) ** 2)


def _solve(p: _Problem, options: FitOptions, extra: torch.Tensor | None = None,
           start: tuple[float, torch.Tensor] | None = None) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(l_a, d, robust weights): grid search (unless `start`), then reweighting rounds of Adam."""
    base = p.base if extra is None else p.base * extra
    if options.other_weight != 1.0 and p.classes > 1:
        base = base * torch.where(p.group % p.classes == BODY, 1.0, options.other_weight)
    robust = torch.ones_like(base)
    if start is None:
        best = None
        for la, d in _grid_search(p, base, keep=2):
            la, d, loss = _descend(p, base, la, d, options.steps)
            if best is None or loss < best[2]:
                best = (la, d, loss)
        la, d = best[0], best[1]
    else:
        la, d = start
    for _ in range(options.rounds):
        residual, _ = _residuals(p, la, d)
        robust = _robust_weights(p, residual, options)
        la, d, _ = _descend(p, base * robust, la, d, options.steps)
    return la, d, robust


def _car_disagreement(p: _Problem, la: float, d: torch.Tensor, robust: torch.Tensor) -> torch.Tensor:
    """Each car's weighted RMS residual relative to its body albedo (how badly the light explains it)."""
    residual, s = _residuals(p, la, d)
    albedo = _albedos(p, s, p.base * robust)
    out = torch.zeros(p.cars, dtype=torch.float64)
    for k in range(p.cars):
        sel = p.car == k
        w = robust[sel]
        rms = ((w * residual[sel] ** 2).sum() / w.sum().clamp_min(1e-12)).sqrt()
        out[k] = rms / albedo[k * p.classes + BODY].clamp_min(0.02)
    return out


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.rad2deg(torch.arccos((a @ b / (a.norm() * b.norm())).clamp(-1.0, 1.0))))


def fit_lighting(samples: list[LightSample], delta: float = 0.05, steps: int = 25,
                 options: FitOptions | None = None) -> LightFit | None:
    """Fit (l_a, l_d = 1 - l_a, d, albedos) to the cars' samples; None when no car has enough pixels."""
    options = options or FitOptions(delta=delta, steps=steps)
    kept = [k for k, s in enumerate(samples) if len(s) >= MIN_PIXELS]
    if not kept:
        return None
    p = _problem([_thin(samples[k], options.max_pixels) for k in kept], options.materials, options.car_power)
    la, d, robust = _solve(p, options)
    if options.reclassify > 0 and p.classes > 1:
        geometric = p.group % p.classes
        for _ in range(options.reclassify_rounds):
            p = _reclassify(p, geometric, la, d, options.reclassify, options.paint_quantile)
            la, d, robust = _solve(p, options, start=(la, d))
    if options.agree > 0 and p.cars >= 3:
        bad = _car_disagreement(p, la, d, robust)
        agree = bad <= options.agree * bad.median()
        if not bool(agree.all()):
            kept = [k for k, ok in zip(kept, agree.tolist(), strict=True) if ok]
            p = _problem([_thin(samples[k], options.max_pixels) for k in kept], options.materials, options.car_power)
            if options.reclassify > 0 and p.classes > 1:
                p = _reclassify(p, p.group % p.classes, la, d, options.reclassify, options.paint_quantile)
            la, d, robust = _solve(p, options, start=(la, d))
    residual, s = _residuals(p, la, d)
    w = p.base * robust
    albedo = _albedos(p, s, w)
    loss = float((w * residual ** 2).sum() / w.sum())
    table = albedo.view(p.cars, p.classes)
    fit = LightFit(la, 1.0 - la, tuple(float(x) for x in d), [float(x) for x in table[:, BODY]], loss,
                   [[float(x) for x in row] for row in table], kept)
    if options.bootstrap > 0:
        fit.direction_sd_deg, fit.ambient_sd = _bootstrap(p, options, la, d)
    return fit


def _bootstrap(p: _Problem, options: FitOptions, la: float, d: torch.Tensor) -> tuple[float, float]:
    """Spread of (d, l_a) over refits with Poisson(1) weights on (car, block) units, from the fit.

    Blocks of BLOCK x BLOCK render pixels, not pixels, are resampled: neighbouring pixels' errors
    (a highlight, a misclassified window) are correlated, and resampling pixels would hide that.
    """
    gen = torch.Generator().manual_seed(options.seed)
    units = int(p.block.max()) + 1
    quick = replace(options, rounds=2, steps=max(10, options.steps // 2))
    angles, shares = [], []
    for _ in range(options.bootstrap):
        weights = torch.poisson(torch.ones(units, dtype=torch.float64), generator=gen)[p.block]
        lb, db, _ = _solve(p, quick, extra=weights, start=(la, d))
        angles.append(_angle_deg(db, d))
        shares.append(lb)
    return float(np.sqrt(np.mean(np.square(angles)))), float(np.std(shares))


def normalise_truth(ambient: float, directional: float) -> tuple[float, float, float]:
    """A true (A, D) in this module's convention: (A / (A + D), D / (A + D), albedo factor A + D)."""
    total = ambient + directional
    return ambient / total, directional / total, total


def direction_error_deg(a, b) -> float:
    a = np.asarray(a, float) / np.linalg.norm(a)
    b = np.asarray(b, float) / np.linalg.norm(b)
    return float(np.degrees(np.arccos(np.clip(a @ b, -1.0, 1.0))))
