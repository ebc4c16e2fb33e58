"""Renderer: analytic pixel cases, closed-form silhouettes, occlusion, windows, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from nmrlight.camera import Camera
from nmrlight.errors import NmrlightError
from nmrlight.render import render
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting


def small_camera(width=64, height=48, f=100.0) -> Camera:
    return Camera.from_intrinsics(f, f, width / 2, height / 2, width, height)


def square(size=2.0, z=10.0, cx=0.0, cy=0.0):
    h = size / 2
    v = torch.tensor([[cx - h, cy - h, z], [cx + h, cy - h, z], [cx + h, cy + h, z], [cx - h, cy + h, z]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return v, f


def test_square_fills_exactly_the_pixels_whose_centres_it_covers():
    cam = small_camera()
    v, f = square(size=2.0, z=10.0)  # projects to u, v in [32 - 10, 32 + 10] x [24 - 10, 24 + 10]
    out = render(Scene([MeshObject(v, f, albedo=0.8)]), cam, None, edges="none")
    expected = np.zeros((48, 64), bool)
    expected[14:34, 22:42] = True  # centres c + 0.5 in [22, 42]
    assert np.array_equal(out.alpha.numpy() > 0.5, expected)
    assert torch.allclose(out.image[0][torch.from_numpy(expected)], torch.tensor(0.8))
    assert torch.allclose(out.depth[torch.from_numpy(expected)], torch.tensor(10.0))
    assert (out.depth[~torch.from_numpy(expected)] == 0).all()
    # the normal of a fronto-parallel square faces the camera: (0, 0, -1), whatever the winding
    normals = out.normals[:, torch.from_numpy(expected)]
    assert torch.allclose(normals, torch.tensor([0.0, 0.0, -1.0])[:, None], atol=1e-6)
    assert out.object_id[14, 22] == 0 and out.object_id[0, 0] == -1


def test_triangle_coverage_matches_pixel_centre_test():
    cam = small_camera(40, 30)
    # a slanted triangle at varying depth; inside test done here independently, at pixel centres
    verts = torch.tensor([[-1.3, -0.9, 8.0], [1.7, -0.2, 9.0], [-0.4, 1.1, 12.0]])
    faces = torch.tensor([[0, 1, 2]])
    out = render(Scene([MeshObject(verts, faces)]), cam, None, edges="none")
    uv = verts[:, :2] / verts[:, 2:] * 100 + torch.tensor([20.0, 15.0])
    cols, rows = np.meshgrid(np.arange(40) + 0.5, np.arange(30) + 0.5)
    a, b, c = uv.numpy().astype(np.float64)

    def edge(p, q):
        return (q[0] - p[0]) * (rows - p[1]) - (q[1] - p[1]) * (cols - p[0])

    e = np.stack([edge(a, b), edge(b, c), edge(c, a)])
    inside = (e >= 0).all(0) | (e <= 0).all(0)
    assert inside.sum() > 50
    assert np.array_equal(out.alpha.numpy() > 0.5, inside)
    # perspective-correct depth: the plane through the three vertices, intersected with each ray
    n = np.cross(verts[1] - verts[0], verts[2] - verts[0]).astype(np.float64)
    rays = np.stack([(cols - 20) / 100, (rows - 15) / 100, np.ones_like(cols)])
    depth = (n @ verts[0].numpy().astype(np.float64)) / np.einsum("k,kij->ij", n, rays)
    assert np.allclose(out.depth.numpy()[inside], depth[inside], rtol=1e-5)


def test_sphere_silhouette_matches_closed_form_area():
    # a sphere of radius r at distance d on the optical axis projects to a disc of radius
    # f r / sqrt(d^2 - r^2) pixels
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    d, r, f = 6.0, 1.0, 200.0
    cam = small_camera(160, 160, f)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32) + torch.tensor([0.0, 0.0, d])
    out = render(Scene([MeshObject(verts, torch.tensor(sphere.faces))]), cam, None, edges="analytic")
    radius_px = f * r / math.sqrt(d * d - r * r)
    assert float(out.alpha.sum()) == pytest.approx(math.pi * radius_px ** 2, rel=5e-3)


def test_cube_front_face_and_flat_lambert_shading():
    box = trimesh.creation.box(extents=(2.0, 2.0, 2.0))
    cam = small_camera(64, 64, 100.0)
    verts = torch.tensor(box.vertices, dtype=torch.float32) + torch.tensor([0.0, 0.0, 10.0])
    light = Lighting(ambient=0.2, directional=0.7, direction=(0.0, 0.0, -2.0))
    out = render(Scene([MeshObject(verts, torch.tensor(box.faces), albedo=0.5)]), cam, light, edges="none")
    # front face z = 9 spans +-100/9 pixels around the centre: lit head-on, I = 0.5 (0.2 + 0.7)
    centre = out.image[0, 26:38, 26:38]
    assert torch.allclose(centre, torch.tensor(0.45))
    assert torch.allclose(out.depth[26:38, 26:38], torch.tensor(9.0))
    covered = (out.alpha > 0.5).sum().item()
    half = 100 / 9
    assert abs(covered - (2 * half) ** 2) < 4 * 2 * half


def test_nearer_object_occludes_and_object_alpha_is_per_object():
    cam = small_camera()
    front = MeshObject(*square(size=1.0, z=5.0), albedo=0.9)
    back = MeshObject(*square(size=4.0, z=10.0), albedo=0.3)
    out = render(Scene([back, front]), cam, None, edges="none")
    assert out.image[0, 24, 32] == pytest.approx(0.9)
    assert out.image[0, 24, 12] == pytest.approx(0.3)
    assert out.object_id[24, 32] == 1 and out.object_id[24, 12] == 0
    assert out.object_alpha[0, 24, 32] == 0 and out.object_alpha[1, 24, 32] == 1
    assert torch.equal(out.alpha, out.object_alpha.sum(0))


def test_window_render_equals_crop_of_full_render():
    cam = Camera.kaggle().scaled(0.05)
    v, f = square(size=3.0, z=20.0, cx=1.0, cy=2.0)
    scene = Scene([MeshObject(v, f)])
    full = render(scene, cam, None)
    x0, y0, w, h = 70, 60, 60, 50
    window = render(scene, cam.window(x0, y0, w, h), None)
    assert torch.allclose(window.alpha, full.alpha[y0:y0 + h, x0:x0 + w], atol=1e-6)
    assert window.alpha.sum() > 100


def test_kaggle_bottom_window_matches_seed_convention():
    cam = Camera.kaggle().window(0, 1480, 3384, 1230)
    assert cam.cy == pytest.approx(1354.9849 - 1480)
    assert (cam.width, cam.height) == (3384, 1230)
    s = Camera.kaggle().scaled(0.25)
    assert s.fx == pytest.approx(2304.5479 / 4) and s.cx == pytest.approx(1686.2379 / 4)
    assert (s.width, s.height) == (846, 678)


def test_distortion_moves_points_by_the_opencv_model():
    cam = Camera.from_intrinsics(100, 100, 50, 50, 100, 100,
                                 dist_coeffs=torch.tensor([0.1, 0.01, 0.001, -0.002, 0.0]))
    p = torch.tensor([[0.2, -0.1, 1.0]])
    uv, _ = cam.project(p)
    x, y = 0.2, -0.1
    r2 = x * x + y * y
    radial = 1 + 0.1 * r2 + 0.01 * r2 * r2
    xd = x * radial + 2 * 0.001 * x * y + (-0.002) * (r2 + 2 * x * x)
    yd = y * radial + 0.001 * (r2 + 2 * y * y) + 2 * (-0.002) * x * y
    assert torch.allclose(uv, torch.tensor([[100 * xd + 50, 100 * yd + 50]]), atol=1e-4)


def test_geometry_behind_camera_or_crossing_near_plane_gives_finite_values_and_gradients():
    cam = small_camera()
    verts = torch.tensor([[-1.0, -1.0, -5.0], [1.0, -1.0, 0.0], [0.0, 1.0, 5.0],
                          [-1.0, 0.0, 4.0], [1.0, 0.0, 4.0], [0.0, 1.0, 4.0]], requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    light = Lighting(torch.tensor(0.3, requires_grad=True), torch.tensor(0.6, requires_grad=True),
                     torch.tensor([0.0, -1.0, -1.0], requires_grad=True))
    for edges in ("analytic", "soft", "none"):
        out = render(Scene([MeshObject(verts, faces)]), cam, light, edges=edges, sigma=2.0)
        loss = out.image.sum() + out.alpha.sum() + out.depth.sum() + out.object_alpha.sum()
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(verts.grad).all()
        assert out.alpha.sum() > 0  # the face in front is still drawn
        verts.grad = None


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: MeshObject(torch.zeros(4, 2), torch.tensor([[0, 1, 2]])), "vertices must have shape"),
        (lambda: MeshObject(torch.zeros(4, 3), torch.tensor([[0, 1, 4]])), "face indices must lie"),
        (lambda: MeshObject(torch.zeros(4, 3), torch.tensor([[0.0, 1, 2]])), "integer"),
        (lambda: MeshObject(torch.tensor([[0, 0, float("nan")]] * 3), torch.tensor([[0, 1, 2]])), "NaN"),
        (lambda: MeshObject(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), rotation=torch.eye(2)), "rotation"),
        (lambda: Camera(torch.zeros(3, 3), 10, 10), "singular"),
        (lambda: Camera(torch.eye(2), 10, 10), "3x3"),
        (lambda: Camera(torch.eye(3), 0, 10), "width"),
        (lambda: Camera(torch.eye(3), 10, -4), "height"),
        (lambda: Camera.kaggle(near=0.0), "near"),
        (lambda: Scene([]), "at least one object"),
        (lambda: Lighting(direction=(0.0, 0.0, 0.0)), "direction"),
    ],
)
def test_bad_input_raises_clear_value_error(build, message):
    with pytest.raises(NmrlightError, match=message):
        build()
    assert issubclass(NmrlightError, ValueError)


def test_bad_render_options_raise():
    scene = Scene([MeshObject(*square())])
    with pytest.raises(NmrlightError, match="edges"):
        render(scene, small_camera(), edges="fuzzy")
    with pytest.raises(NmrlightError, match="background"):
        render(scene, small_camera(), background=torch.zeros(2, 3, 3))
