"""Gradients of image losses against finite differences of a supersampled reference.

The reference renders the same scene k times finer with a plain hard rasteriser and box-filters it
down: its value is the area-averaged image whose derivative the analytic edges approximate. Light
gradients need no edges and are compared with central differences of the renderer itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import trimesh

from nmrlight.camera import Camera
from nmrlight.io.cars import read_car_json
from nmrlight.render import render
from nmrlight.rotations import kaggle_to_matrix
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting


@pytest.fixture(autouse=True)
def double_precision():
    """Finite differences need float64; restore the default for the other test modules."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


SUPERSAMPLE = 8


def hat(w: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros((), dtype=w.dtype)
    return torch.stack([torch.stack([zero, -w[2], w[1]]), torch.stack([w[2], zero, -w[0]]),
                        torch.stack([-w[1], w[0], zero])])


@pytest.fixture(scope="module")
def car(apollo_models):
    mesh = read_car_json(apollo_models / "baojun-310-2017.json")
    return torch.tensor(mesh.object_vertices()), torch.tensor(mesh.faces)


def weights(height: int, width: int, seed: int) -> torch.Tensor:
    """A smooth random weighting of the pixels, so the loss reacts to every kind of motion."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 4, 5, generator=g, dtype=torch.float64)
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0, 0]


class CarScene:
    """One posed mesh in a small window; loss = sum W1 * image + sum W2 * silhouette."""

    def __init__(self, car, edges: str = "analytic", scale: float = 0.15, image_weight: float = 1.0,
                 alpha_weight: float = 1.0):
        self.vertices, self.faces = car
        base = Camera.kaggle().window(1200, 1450, 1000, 700).scaled(scale)
        self.camera = Camera(base.K.double(), base.width, base.height)
        self.R0 = kaggle_to_matrix(torch.tensor([0.15, 0.7, -3.1]))
        self.t0 = torch.tensor([0.4, 1.5, 13.0])
        self.edges = edges
        self.w_image = image_weight * weights(self.camera.height, self.camera.width, 1)
        self.w_alpha = alpha_weight * weights(self.camera.height, self.camera.width, 2)

    def loss(self, omega, t, ambient, directional, direction, camera=None, edges=None, pool=1):
        R = torch.linalg.matrix_exp(hat(omega)) @ self.R0
        obj = MeshObject(self.vertices, self.faces, rotation=R, translation=self.t0 + t, albedo=0.7)
        out = render(Scene([obj]), camera or self.camera, Lighting(ambient, directional, direction),
                     background=0.1, edges=edges or self.edges, normals="smooth", outputs={"image", "alpha"})
        image, alpha = out.image[0], out.alpha
        if pool > 1:
            image = F.avg_pool2d(image[None, None], pool)[0, 0]
            alpha = F.avg_pool2d(alpha[None, None], pool)[0, 0]
        return (self.w_image * image).sum() + (self.w_alpha * alpha).sum()

    def reference(self, omega, t, ambient, directional, direction):
        fine = self.camera.scaled(SUPERSAMPLE)
        with torch.no_grad():
            return float(self.loss(omega, t, ambient, directional, direction, fine, "none", SUPERSAMPLE))

    def pose_gradients(self, lights, steps):
        """(analytic, supersampled finite differences) of the loss w.r.t. (omega, t)."""
        omega = torch.zeros(3, requires_grad=True)
        t = torch.zeros(3, requires_grad=True)
        self.loss(omega, t, *lights).backward()
        numeric = []
        for i, h in enumerate(steps):
            delta = torch.zeros(6)
            delta[i] = h
            plus = self.reference(delta[:3], delta[3:], *lights)
            minus = self.reference(-delta[:3], -delta[3:], *lights)
            numeric.append((plus - minus) / (2 * h))
        return torch.cat([omega.grad, t.grad]), torch.tensor(numeric)


@pytest.fixture(scope="module")
def ellipsoid():
    """A closed, smooth, non-symmetric blob: rotation changes its outline and its shading."""
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    v = torch.tensor(sphere.vertices) * torch.tensor([0.9, 0.7, 2.1])
    return v, torch.tensor(sphere.faces)


def assert_close_gradients(analytic, numeric, rel):
    scale = float(numeric.abs().max())
    for i in range(len(numeric)):
        assert abs(float(analytic[i] - numeric[i])) < rel * scale, (
            f"parameter {i}: analytic {analytic.tolist()} vs numeric {numeric.tolist()}")
    assert F.cosine_similarity(analytic, numeric, dim=0) > 0.98


def light_params():
    return (torch.tensor(0.4, requires_grad=True), torch.tensor(0.6, requires_grad=True),
            torch.tensor([0.3, -1.0, -0.6], requires_grad=True))


def test_silhouette_pose_gradients_of_real_open_mesh_match_supersampled_reference(car):
    # at this scale the car is ~300 px long; thinner-than-a-pixel parts (antenna, spoiler lips) are
    # what point-sampled edge gradients cannot see, so the scale keeps them resolved
    scene = CarScene(car, scale=0.3, image_weight=0.0)
    lights = [p.detach() for p in light_params()]
    analytic, numeric = scene.pose_gradients(lights, [0.005] * 3 + [0.02, 0.02, 0.1])
    assert_close_gradients(analytic, numeric, rel=0.1)


def test_shaded_image_pose_gradients_match_supersampled_reference(ellipsoid):
    scene = CarScene(ellipsoid, scale=0.15, alpha_weight=0.5)
    lights = [p.detach() for p in light_params()]
    analytic, numeric = scene.pose_gradients(lights, [0.01] * 3 + [0.03, 0.03, 0.2])
    assert_close_gradients(analytic, numeric, rel=0.08)


def test_hard_rasteriser_has_no_translation_gradient_but_analytic_edges_do(car):
    # the silhouette term alone: with edges="none" translation cannot move any pixel
    scene = CarScene(car, edges="none", image_weight=0.0)
    t = torch.zeros(3, requires_grad=True)
    scene.loss(torch.zeros(3), t, *[p.detach() for p in light_params()]).backward()
    hard = t.grad.clone()
    scene.edges = "analytic"
    t.grad = None
    scene.loss(torch.zeros(3), t, *[p.detach() for p in light_params()]).backward()
    assert hard.abs().max() < 1e-6 * t.grad.abs().max()
    assert t.grad.abs().max() > 1.0


def test_light_gradients_match_finite_differences(car):
    scene = CarScene(car)
    omega, t = torch.zeros(3), torch.zeros(3)
    ambient, directional, direction = light_params()
    scene.loss(omega, t, ambient, directional, direction).backward()
    analytic = torch.cat([ambient.grad[None], directional.grad[None], direction.grad])
    base = [ambient.detach(), directional.detach(), direction.detach()]
    numeric = []
    h = 1e-4
    for i in range(5):
        def shifted(sign, i=i):
            a, d, v = (x.clone() for x in base)
            if i == 0:
                a = a + sign * h
            elif i == 1:
                d = d + sign * h
            else:
                v[i - 2] += sign * h
            with torch.no_grad():
                return float(scene.loss(omega, t, a, d, v))
        numeric.append((shifted(1) - shifted(-1)) / (2 * h))
    numeric = torch.tensor(numeric)
    assert torch.allclose(analytic, numeric, rtol=1e-4, atol=1e-4 * float(numeric.abs().max()))
    # the direction is normalised inside: moving along it changes nothing
    assert abs(float(analytic[2:] @ base[2])) < 1e-6 * float(analytic[2:].norm()) + 1e-9
    # and the area-averaged reference agrees with the light gradients too
    ref = []
    for i in range(2):
        a, d = base[0] + (h * 1000 if i == 0 else 0), base[1] + (h * 1000 if i == 1 else 0)
        a2, d2 = base[0] - (h * 1000 if i == 0 else 0), base[1] - (h * 1000 if i == 1 else 0)
        ref.append((scene.reference(omega, t, a, d, base[2]) - scene.reference(omega, t, a2, d2, base[2])) / 0.2)
    assert np.allclose(ref, analytic[:2].numpy(), rtol=0.02)


def test_intrinsics_gradient_matches_finite_differences(ellipsoid):
    # image term only: the silhouette term pulls the other way and their sum would amplify errors
    scene = CarScene(ellipsoid, alpha_weight=0.0)
    K = scene.camera.K.clone().requires_grad_(True)
    cam = Camera(K, scene.camera.width, scene.camera.height)
    lights = [p.detach() for p in light_params()]
    scene.loss(torch.zeros(3), torch.zeros(3), *lights, camera=cam).backward()
    for (i, j), h in (((0, 0), 3.0), ((0, 2), 1.5), ((1, 2), 1.5)):
        def at(sign, i=i, j=j, h=h):
            K2 = scene.camera.K.clone()
            K2[i, j] += sign * h / SUPERSAMPLE
            # the supersampled camera scales K by SUPERSAMPLE, so shift the coarse K
            fine = Camera(K2, scene.camera.width, scene.camera.height).scaled(SUPERSAMPLE)
            with torch.no_grad():
                return float(scene.loss(torch.zeros(3), torch.zeros(3), *lights, fine, "none", SUPERSAMPLE))
        numeric = (at(1) - at(-1)) / (2 * h / SUPERSAMPLE)
        assert float(K.grad[i, j]) == pytest.approx(numeric, rel=0.12, abs=0.02 * abs(numeric) + 1e-3)


def test_albedo_depth_and_normal_gradients_match_finite_differences():
    cam = Camera(torch.tensor([[100.0, 0, 32], [0, 100, 24], [0, 0, 1]]), 64, 48)
    verts = torch.tensor([[-1.5, -1.2, 9.0], [1.6, -0.8, 10.0], [0.1, 1.4, 12.0]], requires_grad=True)
    faces = torch.tensor([[0, 1, 2]])
    albedo = torch.tensor([0.3, 0.6, 0.9], requires_grad=True)
    w = weights(48, 64, 3)

    def loss(v, a):
        out = render(Scene([MeshObject(v, faces, albedo=a)]), cam, Lighting(0.3, 0.7, (0.2, -0.5, -1.0)),
                     edges="none", normals="smooth", outputs={"image", "depth", "normals"})
        return (out.image * w).sum() + (out.depth * w).sum() + (out.normals * w).sum()

    loss(verts, albedo).backward()
    h = 1e-6
    for i in range(3):
        d = torch.zeros(3)
        d[i] = h
        with torch.no_grad():
            numeric = (loss(verts, albedo + d) - loss(verts, albedo - d)) / (2 * h)
        assert float(albedo.grad[i]) == pytest.approx(float(numeric), rel=1e-6)
    # interior pixels only move smoothly with the vertices (no pixel changes face for tiny steps)
    for index in [(0, 2), (1, 0), (2, 1), (2, 2)]:
        d = torch.zeros(3, 3)
        d[index] = h
        with torch.no_grad():
            numeric = (loss(verts + d, albedo) - loss(verts - d, albedo)) / (2 * h)
        assert float(verts.grad[index]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-6)


def test_edge_blend_backward_matches_the_gather_formulation():
    """EdgeBlend.apply's hand-written backward against autograd through the plain gathers (and against
    finite differences), with pixels that are both a target and a source and repeated targets."""
    from nmrlight.raster.antialias import EdgeBlend

    g = torch.Generator().manual_seed(7)
    values = torch.rand(2, 12, generator=g, dtype=torch.float64, requires_grad=True)
    weight = (0.5 * torch.rand(6, generator=g, dtype=torch.float64)).requires_grad_(True)
    source = torch.tensor([1, 2, 3, 4, 5, 6])
    target = torch.tensor([0, 1, 1, 9, 5, 11])
    upstream = torch.rand(2, 12, generator=g, dtype=torch.float64)

    def ours(v, w):
        return EdgeBlend(target, source, w).apply(v.clone())

    def plain(v, w):
        return v.clone().index_add(1, target, w * (v[:, source] - v[:, target]))

    assert torch.equal(ours(values, weight), plain(values, weight))
    got = torch.autograd.grad((ours(values, weight) * upstream).sum(), (values, weight))
    expected = torch.autograd.grad((plain(values, weight) * upstream).sum(), (values, weight))
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.autograd.gradcheck(ours, (values, weight))
