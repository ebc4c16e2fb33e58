"""nmrlight.compat.neural_renderer: NMR's API on nmrlight, checked against NMR's own formulas.

Expected pixels are derived by hand from NMR's code: look_at/perspective/projection give NDC
(x, y in [-1, 1], y up); NMR's rasteriser puts pixel column c at x = (2c + 1 - W) / W and, after its
vertical flip, row r at y = 1 - (2r + 1) / H, i.e. continuous pixel coordinates
u = (x + 1) W / 2, v = (1 - y) H / 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import trimesh

import nmrlight.compat.neural_renderer as nr

torch.set_num_threads(2)


def _mesh(m: trimesh.Trimesh) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int32)


def sphere(subdivisions: int = 2):
    return _mesh(trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.8))


def box(extents=(0.2, 0.2, 0.2), centre=(0.0, 0.0, 0.0)):
    v, f = _mesh(trimesh.creation.box(extents=extents))
    return v + torch.tensor(centre), f


def l_shape():
    """Two boxes: an asymmetric object whose silhouette pins the viewpoint down."""
    v1, f1 = box((1.2, 0.4, 0.4), (0.0, -0.2, 0.0))
    v2, f2 = box((0.4, 0.8, 0.4), (0.4, 0.3, 0.0))
    return torch.cat([v1, v2]), torch.cat([f1, f2 + len(v1)])


def to_pixels(ndc: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """NMR NDC (..., 2) -> continuous pixel coordinates (u, v), row 0 at the top."""
    return torch.stack([(ndc[..., 0] + 1) * width / 2, (1 - ndc[..., 1]) * height / 2], dim=-1)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


# --- helpers on worked examples ---------------------------------------------------------------------

def test_look_at_known_eyes():
    pts = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    # eye on -z looking at the origin: identity rotation, shifted by the distance
    out = nr.look_at(pts, (0.0, 0.0, -5.0))
    torch.testing.assert_close(out, pts + torch.tensor([0.0, 0.0, 5.0]))
    # eye on +x: camera z = -x, camera x = up x z = +z (world z appears on the right), y stays up
    out = nr.look_at(pts, [5.0, 0.0, 0.0])
    torch.testing.assert_close(out, torch.tensor([[[1.0, 0.0, 5.0], [0.0, 1.0, 5.0], [0.0, 0.0, 5.0]]]))
    # `look` along +z from the same eye as the first case matches look_at
    torch.testing.assert_close(nr.look(pts, (0.0, 0.0, -5.0), (0.0, 0.0, 1.0)), pts + torch.tensor([0.0, 0.0, 5.0]))


def test_perspective_viewing_angle_30():
    pts = torch.tensor([[[1.0, 2.0, 4.0]]])
    tan = math.tan(math.radians(30))
    torch.testing.assert_close(nr.perspective(pts, angle=30), torch.tensor([[[1 / (4 * tan), 2 / (4 * tan), 4.0]]]))


def test_vertices_to_faces_shape_and_values():
    v = torch.rand(2, 5, 3)
    f = torch.tensor([[[0, 1, 2], [2, 3, 4]], [[4, 3, 2], [1, 0, 4]]], dtype=torch.int32)
    out = nr.vertices_to_faces(v, f)
    assert out.shape == (2, 2, 3, 3)
    torch.testing.assert_close(out[1, 1, 2], v[1, 4])
    torch.testing.assert_close(out[0, 1, 0], v[0, 2])


def test_projection_matches_hand_computation():
    K = torch.tensor([[[100.0, 0.0, 50.0], [0.0, 200.0, 40.0], [0.0, 0.0, 1.0]]])
    R = torch.eye(3)[None]
    t = torch.zeros(1, 1, 3)
    pts = torch.tensor([[[1.0, 2.0, 10.0]]])
    # u = 100 * 0.1 + 50 = 60, v = 200 * 0.2 + 40 = 80 in a 200 x 100 photograph
    out = nr.projection(pts, K, R, t, torch.zeros(1, 5), (200, 100))
    torch.testing.assert_close(out, torch.tensor([[[2 * 60 / 200 - 1, 2 * (100 - 80) / 100 - 1, 10.0]]]))
    # square orig_size as an int, and k1 = 0.1: r^2 = 0.05 scales x_n, y_n by 1.005
    out = nr.projection(pts, K, R, t, torch.tensor([[0.1, 0, 0, 0, 0]]), 200)
    u, v = 100 * 0.1 * 1.005 + 50, 200 * 0.2 * 1.005 + 40
    torch.testing.assert_close(out, torch.tensor([[[2 * u / 200 - 1, 2 * (200 - v) / 200 - 1, 10.0]]]))


def test_get_points_from_angles():
    assert np.allclose(nr.get_points_from_angles(2.0, 0, 90), (2.0, 0.0, 0.0), atol=1e-6)
    assert np.allclose(nr.get_points_from_angles(2.0, 90, 0), (0.0, 2.0, 0.0), atol=1e-6)
    assert np.allclose(nr.get_points_from_angles(2.0, 0, 0), (0.0, 0.0, -2.0), atol=1e-6)
    pts = nr.get_points_from_angles(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 0.0]), torch.tensor([90.0, 0.0]))
    assert pts.shape == (2, 3)
    torch.testing.assert_close(pts, torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, -3.0]]), atol=1e-6, rtol=0)


def test_lighting_function():
    faces = torch.tensor([[[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]])   # NMR normal (v0-v1)x(v2-v1) = +y
    tex = torch.ones(1, 1, 2, 2, 2, 3)
    lit = nr.lighting(faces, tex, 0.3, 0.6, (1, 1, 1), (1, 0.5, 0), (0, 1, 0))
    torch.testing.assert_close(lit[0, 0, 0, 0, 0], torch.tensor([0.9, 0.6, 0.3]))
    dark = nr.lighting(faces, tex, 0.3, 0.6, direction=(0, -1, 0))
    torch.testing.assert_close(dark[0, 0, 1, 1, 1], torch.full((3,), 0.3))


def test_load_save_obj_roundtrip(tmp_path):
    v, f = box((2.0, 1.0, 4.0), (5.0, 0.0, 0.0))
    tex = torch.zeros(len(f), 2, 2, 2, 3)
    tex[..., 0] = 1.0
    tex[: len(f) // 2, ..., 2] = 1.0
    nr.save_obj(str(tmp_path / "m.obj"), v, f, tex)
    v2, f2 = nr.load_obj(str(tmp_path / "m.obj"), normalization=False)
    torch.testing.assert_close(v2, v)
    assert f2.dtype == torch.int32 and torch.equal(f2, f)
    vn, _, t2 = nr.load_obj(str(tmp_path / "m.obj"), load_texture=True, texture_size=2)
    # NMR normalisation: the longest side spans [-1, 1], the box is centred
    torch.testing.assert_close(vn.max(0)[0], torch.tensor([0.5, 0.25, 1.0]))
    torch.testing.assert_close(vn.min(0)[0], -torch.tensor([0.5, 0.25, 1.0]))
    assert t2.shape == (len(f), 2, 2, 2, 3)
    assert torch.allclose(t2.mean((1, 2, 3)), tex.mean((1, 2, 3)), atol=0.05)


# --- Renderer: shapes, orientation, semantics --------------------------------------------------------

def test_every_mode_shapes_and_dtypes():
    v, f = sphere(1)
    vb, fb = torch.stack([v, v * 0.5]), torch.stack([f, f])
    tex = torch.rand(2, len(f), 2, 2, 2, 3)
    r = nr.Renderer(image_size=(40, 24), camera_mode="look_at", background_color=(0.2, 0.3, 0.4))
    rgb, depth, alpha = r(vb, fb, tex)
    assert rgb.shape == (2, 3, 24, 40) and depth.shape == (2, 24, 40) and alpha.shape == (2, 24, 40)
    assert r(vb, fb, tex, mode="rgb").shape == (2, 3, 24, 40)
    assert r(vb, fb, mode="silhouettes").shape == (2, 24, 40)
    assert r(vb, fb, mode="depth").shape == (2, 24, 40)
    for x in (rgb, depth, alpha):
        assert x.dtype == torch.float32
    assert alpha[0].sum() > alpha[1].sum() > 0             # the half-size sphere covers less
    torch.testing.assert_close(rgb[0, :, 0, 0], torch.tensor([0.2, 0.3, 0.4]))   # background colour
    assert depth[0, 0, 0] == 100.0                           # background depth is `far`, as in NMR
    eye = 1 / math.tan(math.radians(30)) + 1
    assert abs(float(depth[0, 12, 20]) - (eye - 0.8)) < 0.02  # front of the sphere on the axis
    with pytest.raises(ValueError):
        r(vb, fb, mode="normals")


def test_look_at_orientation_matches_nmr():
    """A box above and right of the centre lands where NMR's code puts it (rows from the top)."""
    v, f = box((0.2, 0.2, 0.2), (0.3, 0.5, 0.0))
    W, H = 80, 64
    r = nr.Renderer(image_size=(W, H), camera_mode="look_at")
    sil = r(v[None], f[None], mode="silhouettes")[0]
    ndc = nr.perspective(nr.look_at(v[None], r.eye), angle=30)[0]
    uv = to_pixels(ndc[:, :2], W, H)
    rows, cols = torch.nonzero(sil > 0.5, as_tuple=True)
    assert rows.float().mean() < H / 2 - 5 and cols.float().mean() > W / 2 + 5    # above, right
    assert rows.min() >= uv[:, 1].min() - 1 and rows.max() <= uv[:, 1].max()
    assert cols.min() >= uv[:, 0].min() - 1 and cols.max() <= uv[:, 0].max()
    area = (uv[:, 0].max() - uv[:, 0].min()) * (uv[:, 1].max() - uv[:, 1].min())   # front face bounds the box
    assert abs(float(sil.sum()) - float(area)) < 0.25 * float(area)
    # orthographic: NDC = camera x, y directly
    r.perspective = False
    sil = r(v[None], f[None], mode="silhouettes")[0]
    assert abs(float(sil.sum()) - (0.2 * W / 2) * (0.2 * H / 2)) < 0.1 * (0.2 * W / 2) * (0.2 * H / 2)
    rows, cols = torch.nonzero(sil > 0.5, as_tuple=True)
    assert abs(float(rows.float().mean()) + 0.5 - (1 - 0.5) * H / 2) < 0.6
    assert abs(float(cols.float().mean()) + 0.5 - (0.3 + 1) * W / 2) < 0.6


def test_projection_mode_non_square_matches_nmr_projection():
    K = torch.tensor([[[800.0, 0.0, 610.0], [0.0, 820.0, 300.0], [0.0, 0.0, 1.0]]])
    R = torch.eye(3)[None]
    t = torch.tensor([[[0.0, 0.0, 0.0]]])
    v, f = box((0.4, 0.4, 0.4), (0.6, -0.4, 6.0))
    W, H = 200, 80
    r = nr.Renderer(image_size=(W, H), orig_size=(1200, 480), K=K, R=R, t=t)
    sil = r(v[None], f[None], mode="silhouettes")[0]
    ndc = nr.projection(v[None], K, R, t, torch.zeros(1, 5), (1200, 480))[0]
    uv = to_pixels(ndc[:, :2], W, H)
    rows, cols = torch.nonzero(sil > 0.5, as_tuple=True)
    assert rows.min() >= uv[:, 1].min() - 1 and rows.max() <= uv[:, 1].max()
    assert cols.min() >= uv[:, 0].min() - 1 and cols.max() <= uv[:, 0].max()
    # the box is above the principal point (y = -0.4 is up in OpenCV's frame): top part of the image
    assert rows.float().mean() < 300 / 480 * H
    # forward(K=...) overrides the attribute; distortion moves the silhouette outward
    d = torch.tensor([[20.0, 0.0, 0.0, 0.0, 0.0]])
    sil_d = r(v[None], f[None], mode="silhouettes", dist_coeffs=d)[0]
    uv_d = to_pixels(nr.projection(v[None], K, R, t, d, (1200, 480))[0, :, :2], W, H)
    _, cols_d = torch.nonzero(sil_d > 0.5, as_tuple=True)
    assert cols_d.float().mean() > cols.float().mean() + 2
    assert cols_d.min() >= uv_d[:, 0].min() - 1 and cols_d.max() <= uv_d[:, 0].max()


def test_fill_back_culls_like_nmr():
    """NMR draws only faces counter-clockwise on screen (y up); trimesh's outward winding is the
    opposite in NMR's frame, so without fill_back NMR shows the far (inner) side of a sphere."""
    v, f = sphere(2)
    tex = torch.ones(1, len(f), 2, 2, 2, 3)
    both = nr.Renderer(image_size=48, camera_mode="look_at")
    front_only = nr.Renderer(image_size=48, camera_mode="look_at", fill_back=False)
    d_both = both(v[None], f[None], mode="depth")[0]
    d_cull = front_only(v[None], f[None], mode="depth")[0]
    eye = 1 / math.tan(math.radians(30)) + 1
    assert abs(float(d_both[24, 24]) - (eye - 0.8)) < 0.02
    assert abs(float(d_cull[24, 24]) - (eye + 0.8)) < 0.02
    # reversed winding: fill_back=False now keeps the near side and matches fill_back=True
    f_rev = f[:, [0, 2, 1]]
    rgb_cull, d_rev, a_rev = front_only(v[None], f_rev[None], tex)
    rgb_both, _, a_both = both(v[None], f[None], tex)
    torch.testing.assert_close(d_rev[0, 24, 24], d_both[24, 24])
    assert iou(a_rev[0], a_both[0]) > 0.98
    assert (rgb_cull - rgb_both).abs().mean() < 0.01


def test_lighting_matches_nmr_and_frames():
    """Top of a box seen from above is lit fully by NMR's default light (0, 1, 0), the front only by
    the ambient part; object-frame light turns with the object, camera-frame light does not."""
    v, f = box((0.6, 0.6, 0.6))
    tex = torch.ones(1, len(f), 2, 2, 2, 3)
    r = nr.Renderer(image_size=64, camera_mode="look_at")
    r.eye = nr.get_points_from_angles(2.732, 30, 0)
    rgb = r(v[None], f[None], tex, mode="rgb")[0]
    ndc = nr.perspective(nr.look_at(torch.tensor([[[0.0, 0.3, 0.0], [0.0, 0.0, -0.3]]]), r.eye), 30)[0]
    (ut, vt), (uf, vf) = to_pixels(ndc[:, :2], 64, 64).long().tolist()
    torch.testing.assert_close(rgb[:, vt, ut], torch.ones(3))            # top face: 0.5 + 0.5
    torch.testing.assert_close(rgb[:, vf, uf], torch.full((3,), 0.5))    # front face: ambient only

    # projection mode, light toward the camera; yaw the box by 30 degrees
    K = torch.tensor([[[60.0, 0, 32], [0, 60.0, 32], [0, 0, 1]]])
    t = torch.tensor([[[0.0, 0.0, 3.0]]])
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    yaw = torch.tensor([[[c, 0, s], [0, 1, 0], [-s, 0, c]]])
    ident = torch.eye(3)[None]
    for in_camera, expect in ((False, 1.0), (True, c)):
        rr = nr.Renderer(image_size=64, orig_size=64, K=K, R=ident, t=t, light_direction=(0, 0, -1),
                         light_intensity_ambient=0.0, light_intensity_directional=1.0,
                         light_in_camera_frame=in_camera)
        straight = rr(v[None], f[None], tex, mode="rgb")[0, 0, 32, 32]
        turned = rr(v[None], f[None], tex, mode="rgb", R=yaw)[0, 0, 32, 32]
        assert abs(float(straight) - 1.0) < 1e-4
        assert abs(float(turned) - expect) < 1e-3


def test_gradients_reach_overwritten_attributes():
    v, f = sphere(1)
    K = torch.tensor([[[60.0, 0, 32], [0, 60.0, 32], [0, 0, 1]]])
    r = nr.Renderer(image_size=64, orig_size=64, K=K, R=torch.eye(3)[None], t=torch.zeros(1, 1, 3))
    r.t = nn.Parameter(torch.tensor([[[0.1, 0.0, 3.0]]]))
    r.R = nn.Parameter(torch.eye(3)[None])
    r.K = nn.Parameter(K.clone())
    r.light_intensity_ambient = nn.Parameter(torch.tensor(0.4))
    r.light_direction = nn.Parameter(torch.tensor([0.0, 1.0, -1.0]))
    assert {n for n, _ in r.named_parameters()} == {"t", "R", "K", "light_intensity_ambient", "light_direction"}
    rgb, depth, alpha = r(v[None], f[None], torch.ones(1, len(f), 2, 2, 2, 3))
    (rgb.sum() + alpha.sum()).backward()
    for p in r.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


# --- NMR's four examples --------------------------------------------------------------------------------

def test_example1_views_around_the_object():
    v, f = l_shape()
    tex = torch.ones(1, len(f), 2, 2, 2, 3)
    r = nr.Renderer(image_size=64, camera_mode="look_at")
    sils, rgbs = [], []
    for azimuth in range(0, 360, 45):
        r.eye = nr.get_points_from_angles(2.732, 30, azimuth)
        rgb, _, alpha = r(v[None], f[None], tex)
        assert 0.0 <= float(rgb.min()) and float(rgb.max()) <= 1.0 + 1e-6
        rows, cols = torch.nonzero(alpha[0] > 0.5, as_tuple=True)
        assert abs(float(cols.float().mean()) - 31.5) < 8 and abs(float(rows.float().mean()) - 31.5) < 10
        sils.append(alpha[0])
        rgbs.append(rgb[0])
    areas = [float(s.sum()) for s in sils]
    assert min(areas) > 100 and max(areas) / min(areas) > 1.2          # silhouettes change with the view
    assert iou(sils[0], sils[2]) < 0.9
    # az 180 is az 0 seen from behind: the same outline mirrored left-right
    assert iou(sils[0], sils[4].flip(-1)) > 0.9


def test_example2_optimise_vertices_to_silhouette():
    v0, f = sphere(2)
    target_v, target_f = box((1.0, 1.0, 1.0))
    r = nr.Renderer(image_size=64, camera_mode="look_at")
    r.eye = nr.get_points_from_angles(2.732, 0, 90)
    with torch.no_grad():
        ref = r(target_v[None], target_f[None], mode="silhouettes")
    vertices = nn.Parameter(v0[None].clone())
    opt = torch.optim.Adam([vertices], lr=0.01)
    first = None
    for _ in range(60):
        opt.zero_grad()
        image = r(vertices, f[None], mode="silhouettes")
        loss = torch.sum((image - ref) ** 2)
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
    with torch.no_grad():
        final = r(vertices, f[None], mode="silhouettes")
    start_iou = iou(r(v0[None], f[None], mode="silhouettes")[0].detach(), ref[0])
    assert float(torch.sum((final - ref) ** 2)) < 0.4 * first
    assert iou(final[0], ref[0]) > max(start_iou + 0.05, 0.9)


def test_example3_optimise_textures_to_image():
    v, f = sphere(1)
    upper = (v[f.long()].mean(1)[:, 1] > 0)
    true_tex = torch.zeros(1, len(f), 2, 2, 2, 3)
    true_tex[0, upper] = torch.tensor([0.9, 0.2, 0.1])
    true_tex[0, ~upper] = torch.tensor([0.1, 0.3, 0.8])
    r = nr.Renderer(image_size=48, camera_mode="look_at")
    r.perspective = False
    r.light_intensity_directional = 0.0
    r.light_intensity_ambient = 1.0
    textures = nn.Parameter(torch.zeros(1, len(f), 2, 2, 2, 3))
    opt = torch.optim.Adam([textures], lr=0.1, betas=(0.5, 0.999))
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(40):
        r.eye = nr.get_points_from_angles(2.732, 0, float(rng.uniform(0, 360)))
        with torch.no_grad():
            ref = r(v[None], f[None], true_tex, mode="rgb")
        opt.zero_grad()
        image = r(v[None], f[None], torch.tanh(textures), mode="rgb")
        loss = torch.sum((image - ref) ** 2)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.1 * np.mean(losses[:3])
    r.eye = nr.get_points_from_angles(2.732, 0, 123.0)
    with torch.no_grad():
        got = r(v[None], f[None], torch.tanh(textures), mode="rgb")[0]
        want = r(v[None], f[None], true_tex, mode="rgb")[0]
    assert (got - want).abs().mean() < 0.03
    assert torch.allclose(got[:, 24, 24], want[:, 24, 24], atol=0.08)


def test_example4_recover_camera_position():
    v, f = l_shape()
    r = nr.Renderer(image_size=64, camera_mode="look_at")
    true_eye = torch.tensor(nr.get_points_from_angles(2.732, 30, -15), dtype=torch.float32)
    r.eye = true_eye
    with torch.no_grad():
        ref = r(v[None], f[None], mode="silhouettes")
    camera_position = nn.Parameter(torch.tensor(nr.get_points_from_angles(3.0, 15, 5), dtype=torch.float32))
    r.eye = camera_position
    opt = torch.optim.Adam([camera_position], lr=0.05)
    start = float((camera_position.detach() - true_eye).norm())
    assert start > 1.0
    for _ in range(60):
        opt.zero_grad()
        loss = torch.sum((r(v[None], f[None], mode="silhouettes") - ref) ** 2)
        loss.backward()
        opt.step()
    assert loss.item() < 1.0
    assert float((camera_position.detach() - true_eye).norm()) < 0.05


# --- a Kaggle-style refinement script ------------------------------------------------------------------

def toy_car():
    body_v, body_f = box((1.8, 0.8, 4.4), (0.0, -0.5, 0.0))
    cab_v, cab_f = box((1.5, 0.6, 2.2), (0.0, -1.2, -0.4))
    return torch.cat([body_v, cab_v]), torch.cat([body_f, cab_f + len(body_v)])


def yaw(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def test_kaggle_style_script():
    K = torch.tensor([[[2304.5479, 0.0, 1686.2379], [0.0, 2305.8757, 1354.9849 - 1480], [0.0, 0.0, 1.0]]])
    v, f = toy_car()
    vertices, faces = v[None], f[None]
    textures = torch.full((1, len(f), 2, 2, 2, 3), 0.7)
    renderer = nr.Renderer(image_size=(846, 308), orig_size=(3384, 1230), K=K,
                           R=yaw(0.5)[None], t=torch.tensor([[[-2.0, 2.5, 15.0]]]), fill_back=True)
    with torch.no_grad():
        target_sil = renderer(vertices, faces, mode="silhouettes")
    assert target_sil.shape == (1, 308, 846) and target_sil.sum() > 500

    renderer.R = nn.Parameter(yaw(0.42)[None])
    renderer.t = nn.Parameter(torch.tensor([[[-1.8, 2.5, 15.6]]]))
    opt = torch.optim.Adam([renderer.R, renderer.t], lr=0.01)

    def sil_loss():
        sil = renderer(vertices, faces, mode="silhouettes")
        inter = (sil * target_sil).sum()
        return 1 - inter / (sil + target_sil - sil * target_sil).sum()

    first = sil_loss().item()
    for _ in range(25):
        opt.zero_grad()
        loss = sil_loss()
        loss.backward()
        opt.step()
    assert sil_loss().item() < 0.5 * first

    # lighting as parameters, pose fixed at the truth
    renderer.R = nn.Parameter(yaw(0.5)[None], requires_grad=False)   # a Parameter slot keeps Parameters
    renderer.t = nn.Parameter(torch.tensor([[[-2.0, 2.5, 15.0]]]), requires_grad=False)
    renderer.light_intensity_ambient = 0.6
    renderer.light_intensity_directional = 0.4
    renderer.light_direction = [0.3, -1.0, -0.5]
    with torch.no_grad():
        target_rgb = renderer(vertices, faces, textures, mode="rgb")
    renderer.light_intensity_ambient = nn.Parameter(torch.tensor(0.3))
    renderer.light_intensity_directional = nn.Parameter(torch.tensor(0.2))
    renderer.light_direction = nn.Parameter(torch.tensor([0.0, -1.0, 0.0]))
    opt = torch.optim.Adam([renderer.light_intensity_ambient, renderer.light_intensity_directional,
                            renderer.light_direction], lr=0.05)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = ((renderer(vertices, faces, textures, mode="rgb") - target_rgb) ** 2).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
