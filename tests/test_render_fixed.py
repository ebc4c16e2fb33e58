"""Fixed layers (objects rasterised once, the moving ones drawn over them) and partial outputs:
the same pixels and gradients as rendering the whole scene every time."""

from __future__ import annotations

import torch

from nmrlight.camera import Camera
from nmrlight.procedural import make_car
from nmrlight.render import fixed_layer, render
from nmrlight.rotations import so3_exp
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting


def _car(kind: str, seed: int, faces: int = 800) -> tuple[torch.Tensor, torch.Tensor]:
    mesh = make_car(kind, seed, target_faces=faces).mesh
    v = torch.tensor(mesh.object_vertices(), dtype=torch.float32)
    return v, torch.tensor(mesh.faces)


def _camera() -> Camera:
    return Camera.from_intrinsics(150.0, 150.0, 60.0, 45.0, 120, 90)


def _scene_parts():
    """A moving car partly hidden behind one fixed car and partly hiding another."""
    others = []
    for kind, seed, pose in (("suv", 1, (-1.0, 0.6, 9.0)), ("hatchback", 2, (1.5, 0.8, 16.0))):
        v, f = _car(kind, seed)
        rotation = so3_exp(torch.tensor([0.05, 0.7 * seed, 3.1]))
        others.append(MeshObject((v @ rotation.T + torch.tensor(pose)).detach(), f, albedo=0.7))
    v, f = _car("sedan", 0)
    return v, f, others


def _moving(v, f, omega, t):
    return MeshObject(v, f, so3_exp(omega) @ so3_exp(torch.tensor([0.1, 2.5, 3.1])), t, albedo=0.9)


def test_fixed_layer_gives_the_same_pixels_and_gradients_as_the_whole_scene():
    v, f, others = _scene_parts()
    camera = _camera()
    lighting = Lighting(0.4, 0.6, (0.3, -1.0, -0.4))
    layer = fixed_layer(others, camera)
    assert layer is not None
    results = []
    for use_layer in (False, True):
        omega = torch.tensor([0.01, -0.02, 0.015], requires_grad=True)
        t = torch.tensor([0.3, 0.7, 12.0], requires_grad=True)
        car = _moving(v, f, omega, t)
        if use_layer:
            out = render(Scene([car]), camera, lighting, fixed=layer)
        else:
            out = render(Scene([car, *others]), camera, lighting)
        loss = (out.image ** 2).sum() + (out.object_alpha[0] * torch.linspace(0, 1, 120)).sum()
        loss.backward()
        results.append((out, omega.grad.clone(), t.grad.clone()))
    (whole, gw_omega, gw_t), (layered, gl_omega, gl_t) = results
    assert 0 < int((whole.object_id == 0).sum()) and int((whole.object_id >= 1).sum()) > 0
    assert torch.equal(whole.face_id, layered.face_id)
    assert torch.equal(whole.image, layered.image)
    assert torch.equal(whole.object_alpha, layered.object_alpha)
    assert torch.equal(whole.depth, layered.depth)
    assert torch.allclose(gw_omega, gl_omega, rtol=1e-6, atol=0) and torch.allclose(gw_t, gl_t, rtol=1e-6, atol=0)
    assert float(gw_t.abs().sum()) > 0


def test_moving_faces_win_exact_depth_ties_as_in_one_pass():
    # two coincident squares: in one pass the lower face index (the moving object, drawn first) wins
    camera = _camera()
    v = torch.tensor([[-1.0, -1.0, 10.0], [1.0, -1.0, 10.0], [1.0, 1.0, 10.0], [-1.0, 1.0, 10.0]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    fixed = [MeshObject(v + torch.tensor([0.5, 0.0, 0.0]), f)]
    whole = render(Scene([MeshObject(v, f), *fixed]), camera, None, edges="none")
    layered = render(Scene([MeshObject(v, f)]), camera, None, edges="none", fixed=fixed_layer(fixed, camera))
    assert torch.equal(whole.face_id, layered.face_id)
    assert int((layered.object_id == 0).sum()) == int((whole.object_id == 0).sum()) > 0
    assert int((layered.object_id == 1).sum()) > 0   # the part of the fixed square beside it


def test_fixed_layer_of_another_camera_is_ignored_and_alpha_objects_keeps_the_first():
    v, f, others = _scene_parts()
    camera = _camera()
    other_camera = Camera.from_intrinsics(140.0, 140.0, 60.0, 45.0, 120, 90)
    car = _moving(v, f, torch.zeros(3), torch.tensor([0.3, 0.7, 12.0]))
    whole = render(Scene([car, *others]), camera, None)
    stale = render(Scene([car]), camera, None, fixed=fixed_layer(others, other_camera), alpha_objects=1)
    assert torch.equal(whole.face_id, stale.face_id)
    assert stale.object_alpha.shape == (1, 90, 120)
    assert torch.equal(whole.object_alpha[:1], stale.object_alpha)
