"""Compiled CPU kernels against the plain PyTorch reference (the CUDA path), and soft silhouettes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nmrlight.camera import Camera
from nmrlight.io.cars import read_car_json
from nmrlight.raster.antialias import silhouette_edges
from nmrlight.raster.soft import soft_silhouettes
from nmrlight.render import project_scene, render
from nmrlight.rotations import kaggle_to_matrix
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting


@pytest.fixture(scope="module")
def two_cars(apollo_models):
    objs = []
    for name, pose in (("baojun-310-2017", [0.15, -1.0, -3.1, -3.0, 6.0, 12.0]),
                       ("aodi-a6", [0.16, 0.5, 3.1, 4.0, 5.5, 18.0])):
        mesh = read_car_json(apollo_models / f"{name}.json")
        objs.append(MeshObject(torch.tensor(mesh.object_vertices(), dtype=torch.float64), torch.tensor(mesh.faces),
                               rotation=kaggle_to_matrix(torch.tensor(pose[:3], dtype=torch.float64)),
                               translation=torch.tensor(pose[3:], dtype=torch.float64), albedo=0.6))
    cam = Camera.kaggle().window(0, 1480, 3384, 1230).scaled(0.1)
    return Scene(objs), Camera(cam.K.double(), cam.width, cam.height)


def test_numba_and_torch_visibility_agree(two_cars):
    scene, cam = two_cars
    a = render(scene, cam, None, backend="numba")
    b = render(scene, cam, None, backend="torch")
    same = (a.face_id == b.face_id).float().mean()
    assert same > 0.9995
    assert torch.equal(a.object_id, b.object_id)
    assert a.visibility.pixels.numel() > 1000


def test_numba_and_torch_renders_and_gradients_agree(two_cars):
    scene, cam = two_cars
    results = {}
    for backend in ("numba", "torch"):
        t = scene.objects[1].translation.detach().clone().requires_grad_(True)
        light = Lighting(torch.tensor(0.4, dtype=torch.float64, requires_grad=True), 0.6,
                         torch.tensor([0.2, -1.0, -0.5], dtype=torch.float64))
        objs = [scene.objects[0], MeshObject(scene.objects[1].vertices, scene.objects[1].faces,
                                             rotation=scene.objects[1].rotation, translation=t, albedo=0.6)]
        out = render(Scene(objs), cam, light, backend=backend, outputs={"image", "alpha", "object_alpha"})
        weight = torch.linspace(0, 1, cam.width, dtype=torch.float64)
        loss = (out.image[0] * weight).sum() + (out.object_alpha[1] * weight).sum()
        loss.backward()
        results[backend] = (out.image.detach(), out.object_alpha.detach(), t.grad, light.ambient.grad)
    (ia, oa, ga, la), (ib, ob, gb, lb) = results["numba"], results["torch"]
    assert torch.allclose(ia, ib, atol=1e-9)
    assert torch.allclose(oa, ob, atol=1e-9)
    assert torch.allclose(ga, gb, rtol=1e-6)
    assert torch.allclose(la, lb, rtol=1e-9)


def test_silhouette_edge_lists_agree(two_cars):
    scene, cam = two_cars
    screen, packed = _screen(scene, cam)
    lists = [silhouette_edges(screen, packed.adjacency, backend) for backend in ("numba", "torch")]
    rows = [set(zip(map(tuple, e.vertices.tolist()), map(tuple, e.faces.tolist()), e.inside.tolist(), strict=True))
            for e in lists]
    assert rows[0] == rows[1] and len(rows[0]) > 500


def _screen(scene, cam):
    packed = scene.pack()
    return project_scene(packed, cam), packed


def test_soft_silhouette_kernel_matches_reference_values_and_gradients(two_cars):
    scene, cam = two_cars
    screen, packed = _screen(scene, cam)
    weight = torch.rand(2, cam.height, cam.width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = {}
    for backend in ("numba", "torch"):
        uv = screen.uv.detach().clone().requires_grad_(True)
        mesh = type(screen)(uv, screen.z, screen.faces, screen.valid, screen.height, screen.width)
        soft = soft_silhouettes(mesh, packed.face_object, 2, sigma=1.5, backend=backend)
        (soft * weight).sum().backward()
        out[backend] = (soft.detach(), uv.grad)
    assert torch.allclose(out["numba"][0], out["torch"][0], atol=1e-10)
    assert torch.allclose(out["numba"][1], out["torch"][1], atol=1e-8)
    assert out["numba"][1].abs().sum() > 0


def test_soft_silhouette_closed_form_for_one_triangle():
    # a big triangle; a pixel centre at distance d outside its edge gets sigmoid(-d^2 / sigma^2),
    # one inside at distance d from the nearest edge gets sigmoid(+d^2 / sigma^2)
    cam = Camera.from_intrinsics(10.0, 10.0, 0.0, 0.0, 40, 40)
    verts = torch.tensor([[0.2, 1.0, 1.0], [3.8, 1.0, 1.0], [0.2, 3.8, 1.0]], dtype=torch.float64)
    obj = MeshObject(verts, torch.tensor([[0, 1, 2]]))
    sigma = 2.0
    out = render(Scene([obj]), Camera(cam.K.double(), 40, 40), None, edges="soft", sigma=sigma,
                 outputs={"alpha", "object_alpha"})
    # the edge y = 10 px: pixel centre (5.5, 8.5) is 1.5 px outside, (5.5, 12.5) 2.5 px inside
    # (its nearest edge: x = 2 is 3.5 px away, the hypotenuse farther)
    assert float(out.alpha[8, 5]) == pytest.approx(1 / (1 + math.exp(1.5 ** 2 / sigma ** 2)), rel=1e-9)
    assert float(out.alpha[12, 5]) == pytest.approx(1 / (1 + math.exp(-(2.5 ** 2) / sigma ** 2)), rel=1e-9)
    assert torch.allclose(out.alpha, out.object_alpha[0], atol=1e-12)


def test_soft_silhouette_gradient_matches_finite_differences(two_cars):
    scene, cam = two_cars
    screen, packed = _screen(scene, cam)
    weight = torch.rand(2, cam.height, cam.width, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss(uv):
        mesh = type(screen)(uv, screen.z, screen.faces, screen.valid, screen.height, screen.width)
        return (soft_silhouettes(mesh, packed.face_object, 2, sigma=2.0) * weight).sum()

    uv = screen.uv.detach().clone().requires_grad_(True)
    loss(uv).backward()
    # move whole cars (all their vertices) in u and v
    for obj in range(2):
        for axis in range(2):
            direction = torch.zeros_like(uv)
            start, count = packed.vertex_offset[obj], len(scene.objects[obj].vertices)
            direction[start:start + count, axis] = 1.0
            h = 1e-3
            with torch.no_grad():
                numeric = (loss(uv.detach() + h * direction) - loss(uv.detach() - h * direction)) / (2 * h)
            analytic = (uv.grad * direction).sum()
            assert float(analytic) == pytest.approx(float(numeric), rel=1e-3, abs=1e-6)


def test_soft_object_alpha_is_hidden_by_nearer_objects(two_cars):
    scene, cam = two_cars
    out = render(scene, cam, None, edges="soft", sigma=1.0, outputs={"object_alpha", "alpha"})
    # car 0 is nearer (z = 12 vs 18): where it is solid, car 1 is invisible
    solid = out.object_alpha[0] > 0.999
    assert solid.sum() > 100
    assert float(out.object_alpha[1][solid].max()) < 1e-3
    assert torch.all(out.alpha <= 1) and torch.all(out.alpha >= 0)


def test_closest_crossing_per_pair_matches_a_sort_and_scatter_reference():
    """One crossing per pixel pair: the nearest edge, the first of equals, in ascending key order
    (what the sort-and-scatter formulation off the CPU gives)."""
    from nmrlight.raster.kernels import closest_per_pair

    rng = np.random.default_rng(5)
    for trial in range(20):
        m = int(rng.integers(2, 60))
        key = rng.integers(0, m // 2 + 2, size=m).astype(np.int64)
        nearness = rng.choice(np.array([0.5, 1.0, 1.5], dtype=np.float32), size=m)   # many ties
        keys, slot = np.unique(key, return_inverse=True)
        expected = []
        for k in range(len(keys)):
            members = np.flatnonzero(slot == k)
            best = nearness[members].max()
            expected.append(members[nearness[members] == best].min())
        got = closest_per_pair(key, nearness)
        if len(keys) == m:
            assert np.array_equal(got, np.arange(m))
        else:
            assert np.array_equal(got, np.array(expected)), trial
