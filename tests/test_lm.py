"""Levenberg-Marquardt stages: the local model from one render (gradient, Gauss-Newton Hessian) and
the stage optimiser on a small two-car scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import two_car_problem

from nmrlight.camera import Camera
from nmrlight.errors import NmrlightError
from nmrlight.procedural import make_car
from nmrlight.refine import car_view, pose
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.window import make_view, signed_distance
from nmrlight.render import render
from nmrlight.rotations import so3_exp
from nmrlight.scene import MeshObject, Scene


@pytest.fixture(scope="module")
def scene():
    """A car partly hidden by a nearer one, its mask and photo, and a start off by a turn and a shift."""
    return two_car_problem(0.06, (0.15, 0.0, 0.5))


@pytest.mark.parametrize("sigma, offset", [(1.5, 0.4), (0.0, 0.4), (1.5, -9.0)])
def test_local_model_gradient_is_autograds_and_its_hessian_is_positive(scene, sigma, offset):
    """Also with the mask offset beyond its range (-9 px): the mask then stays put, only the prior acts."""
    problem, lighting, _, _ = scene
    config = RefineConfig()
    params = pose.PoseParams(problem.rotation, problem.translation, problem.camera)
    distance = signed_distance(problem.mask)
    params.bound_dilation(float(distance.max()), config)
    with torch.no_grad():
        params.dilation += offset
    view = make_view(problem.camera, problem.box, 96, problem.photo, problem.mask, None, 1, sigma, sdf=distance)
    loss, _, _ = car_view.evaluate(params, problem, view, lighting, config, "analytic", sigma)
    loss.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in params.parameters()]).double()
    model = car_view.linearise(params, problem, view, lighting, config, "analytic", sigma)
    assert model.loss == pytest.approx(float(loss.detach()), rel=1e-6)
    assert torch.linalg.vector_norm(model.gradient - expected) < 1e-4 * torch.linalg.vector_norm(expected)
    assert torch.allclose(model.hessian, model.hessian.T, atol=1e-9)
    values = torch.linalg.eigvalsh(model.hessian)
    assert float(values.min()) > -1e-9 * float(values.max())


def test_silhouette_hessian_predicts_the_loss_of_a_small_step(scene):
    """Without the photo-edge term the loss is the silhouette's sum of squares plus the prior: the
    quadratic model predicts a small Gauss-Newton step's fall (the visibility barely changes)."""
    problem, lighting, _, _ = scene
    config = RefineConfig(weight_edges=0.0)
    params = pose.PoseParams(problem.rotation, problem.translation, problem.camera)
    view = make_view(problem.camera, problem.box, 96, problem.photo, problem.mask, None, 1, 1.5,
                     sdf=signed_distance(problem.mask))
    model = car_view.linearise(params, problem, view, lighting, config, "analytic", 1.5)
    step = -torch.linalg.solve(model.hessian + 1e-6 * torch.eye(7, dtype=torch.float64), model.gradient) * 0.05
    predicted = model.loss + float(model.gradient @ step + 0.5 * step @ model.hessian @ step)
    with torch.no_grad():
        for p, d in zip(params.parameters(), torch.split(step, [3, 2, 1, 1]), strict=True):
            p.add_(d.to(p.dtype).view_as(p))
    after = car_view.linearise(params, problem, view, lighting, config, "analytic", 1.5).loss
    assert after < model.loss
    assert abs(after - predicted) < 0.1 * (model.loss - predicted)


def test_lm_stages_find_the_pose_in_fewer_renders_than_adam(scene):
    problem, lighting, true_rotation, true_translation = scene
    stages = ((64, "analytic", 1.5, 25), (96, "analytic", 0.0, 25))
    outcomes = {name: pose.refine_pose(problem, lighting, RefineConfig(stages=stages, large_stage=None,
                                                                       stage_optimizers=(name,)))
                for name in ("adam", "lm")}
    def errors(outcome):
        turn = torch.arccos(((outcome.rotation @ true_rotation.T).trace() - 1).clamp(-2, 2) / 2)
        return float(torch.linalg.vector_norm(outcome.translation - true_translation)), float(torch.rad2deg(turn))

    start = errors(pose.PoseOutcome(problem.rotation, problem.translation, 0, 0, 0, 0, 0, False, 0.0))
    lm, adam = errors(outcomes["lm"]), errors(outcomes["adam"])
    assert outcomes["lm"].loss_after < outcomes["lm"].loss_before
    assert lm[0] < 0.3 * start[0] and lm[1] < 0.7 * start[1]          # 0.52 m and 3.4 deg off at the start
    assert lm[0] < 1.2 * adam[0] + 0.01 and lm[1] < adam[1] + 0.3     # as close as Adam gets ...
    assert outcomes["lm"].loss_after <= outcomes["adam"].loss_after * 1.02
    assert outcomes["lm"].iterations < 0.6 * outcomes["adam"].iterations   # ... in far fewer renders


def test_lm_needs_the_silhouette_terms(scene):
    problem, lighting, _, _ = scene
    config = RefineConfig(losses="both", stages=((64, "analytic", 1.5, 3),), large_stage=None,
                          stage_optimizers=("lm",))
    with pytest.raises(NmrlightError, match="lm optimiser"):
        pose.refine_pose(problem, lighting, config)
    with pytest.raises(NmrlightError, match="optimizer must be one of"):
        pose.refine_pose(problem, lighting, RefineConfig(stage_optimizers=("newton",)))
    with pytest.raises(NmrlightError, match="CPU only"):
        pose.refine_pose(problem, lighting, RefineConfig(optimizer="lm", device="cuda"))
    assert pose.stage_optimizer(RefineConfig(device="cuda"), 0, "analytic") == "adam"
    assert pose.stage_optimizer(RefineConfig(), 0, "analytic") == "lm"
    assert pose.stage_optimizer(RefineConfig(losses="both"), 0, "analytic") == "adam"


def test_batched_crossing_fractions_are_the_renders_weights():
    """The blend weights `render` used are `blend_weights` of the edges' end points, also when several
    poses' end points are evaluated at once (the batch the Jacobian is taken from)."""
    from nmrlight.raster.antialias import blend_weights

    camera = Camera.from_intrinsics(120.0, 120.0, 32.0, 24.0, 64, 48)
    mesh = make_car("sedan", 0, target_faces=800).mesh
    car = MeshObject(torch.tensor(mesh.object_vertices(), dtype=torch.float32), torch.tensor(mesh.faces),
                     so3_exp(torch.tensor([0.0, 0.7, 3.1])), torch.tensor([0.0, 0.5, 12.0]))
    out = render(Scene([car]), camera, None, outputs={"object_alpha"}, alpha_objects=1)
    geometry = out.blend.geometry
    uv = out.screen.uv
    assert torch.equal(blend_weights(uv[geometry.a], uv[geometry.b], geometry), out.blend.weight)
    stacked = torch.stack([uv, uv + 0.25])
    batched = blend_weights(stacked[:, geometry.a], stacked[:, geometry.b], geometry)
    assert torch.equal(batched[0], out.blend.weight)
    assert np.isfinite(batched.numpy()).all()


@pytest.mark.parametrize(("args", "message"), [
    (["--optimizer", "newton"], "--optimizer must be one of auto, adam, lbfgs, lm, got 'newton'"),
    (["--optimizer", "lm", "--losses", "both"], "--optimizer lm takes --losses silhouette"),
    (["--optimizer", "lm", "--device", "cuda"], "--optimizer lm runs on the CPU only"),
])
def test_the_cli_names_a_bad_optimizer(tmp_path, monkeypatch, capsys, args, message):
    import sys

    from nmrlight.cli import main

    predictions = tmp_path / "p.csv"
    predictions.write_text("ImageId,PredictionString\n")
    monkeypatch.setattr(sys, "argv", ["nmrlight", "refine", str(tmp_path), "-p", str(predictions), "--out",
                                      str(tmp_path / "out"), *args])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_mask_offset_cannot_erase_the_mask_a_car_misses():
    """A car rendered beside its mask (IoU about 0) cannot lower its loss by eroding the mask away: the
    silhouette term of a render that misses its mask is at its maximum (2) whatever the offset, and the
    offset acts only within its range (3 px, and half the mask's thickness), so it is flat beyond
    it; refine_pose reports an offset inside it."""
    from dataclasses import replace

    problem, lighting, _, _ = two_car_problem(0.0, (2.5, 0.0, 0.0))
    distance = signed_distance(problem.mask)
    view = make_view(problem.camera, problem.box, 96, problem.photo, problem.mask, None, 1, 0.0, sdf=distance)

    def image_loss(config: RefineConfig, offset: float) -> float:
        params = pose.PoseParams(problem.rotation, problem.translation, problem.camera)
        params.bound_dilation(float(distance.max()), config)
        with torch.no_grad():
            params.dilation.fill_(offset)
            loss, iou, _ = car_view.evaluate(params, problem, view, lighting, replace(config, prior_weight=0.0),
                                             "analytic", 0.0)
        assert float(iou) < 0.05
        return float(loss)

    unbounded = RefineConfig(dilation_max=None, weight_edges=0.0)
    losses = [image_loss(unbounded, offset) for offset in (-12.0, -3.0, 0.0, 3.0)]
    assert all(1.8 < value <= 2.0 for value in losses)
    assert losses[2] - losses[0] < 0.1   # over the mask's area alone: more than 0.6
    bounded = RefineConfig()
    assert image_loss(bounded, -12.0) == pytest.approx(image_loss(bounded, -3.0), abs=1e-6)
    assert image_loss(bounded, 12.0) == pytest.approx(image_loss(bounded, 3.0), abs=1e-6)
    # a thin mask: erosion limited to half its largest inscribed radius
    thin = RefineConfig(dilation_max=3.0, dilation_max_erode=0.5)
    params = pose.PoseParams(problem.rotation, problem.translation, problem.camera)
    params.bound_dilation(2.0, thin)
    assert params.dilation_range == (-1.0, 3.0)
    outcome = pose.refine_pose(problem, lighting, RefineConfig(align_start=False))
    assert -3.0 - 1e-6 <= outcome.mask_offset <= 3.0 + 1e-6


def test_lm_takes_no_step_on_a_flat_local_model():
    """A car whose pixels no term sees (out of its window, wholly hidden) linearises to a zero Hessian
    with a gradient left over from the non-least-squares terms; the damped solve would throw it ~1e20
    away (a translation of inf, then NaN). LM stops there, the pose untouched."""
    from nmrlight.refine.linearise import LocalModel
    from nmrlight.refine.optimisers import lm_stage

    x = torch.tensor([0.1, -0.2, 3.0], dtype=torch.float64)
    calls = []

    def flat() -> LocalModel:
        calls.append(1)
        return LocalModel(1.5, torch.tensor([0.05, -0.01, 0.1], dtype=torch.float64),
                          torch.zeros(3, 3, dtype=torch.float64), 0.0, torch.zeros(4, 4, dtype=torch.bool))

    lm_stage([x], flat, 20, 1e-5, 1e-3)
    assert torch.equal(x, torch.tensor([0.1, -0.2, 3.0], dtype=torch.float64))
    assert len(calls) == 1

    # the same stage on a curved model steps to its minimum
    target = torch.tensor([0.3, 0.1, 2.0], dtype=torch.float64)

    def bowl() -> LocalModel:
        d = x - target
        return LocalModel(float(d @ d), 2 * d, 2 * torch.eye(3, dtype=torch.float64), 0.0,
                          torch.zeros(4, 4, dtype=torch.bool))

    lm_stage([x], bowl, 20, 1e-12, 1e-3)
    assert torch.allclose(x, target, atol=1e-6)


def test_lm_refuses_a_runaway_step_in_a_nearly_flat_direction():
    """Crowded seed 61's 04 and 08 (twentieth session): in the polish without the prior, a car's local
    model curved strongly in rotation but hardly at all in depth, so the damped solve stepped log depth
    by an astronomical amount and the image failed (translation inf, then NaN). With `max_step` such a
    step is refused unrendered, as a failed step is; the damping grows, and where no step inside the
    bounds is left (here the flat direction's step shrinks only as 1 / lambda) the stage stops at the
    pose it had, as on a flat model. A step inside the bounds is taken as before."""
    from nmrlight.refine.linearise import LocalModel
    from nmrlight.refine.optimisers import lm_stage

    target = torch.tensor([0.2, 0.0], dtype=torch.float64)

    def run(curvature: float, max_step):
        x = torch.zeros(2, dtype=torch.float64)
        rendered = []

        def model() -> LocalModel:   # steep along x[0]; along x[1] a gradient and `curvature`
            rendered.append(x.clone())
            d = x - target
            loss = float(d[0] ** 2 + 1e-3 * x[1] + 0.5 * curvature * x[1] ** 2)
            gradient = torch.tensor([2 * float(d[0]), 1e-3 + curvature * float(x[1])], dtype=torch.float64)
            return LocalModel(loss, gradient, torch.diag(torch.tensor([2.0, curvature], dtype=torch.float64)), 0.0,
                              torch.zeros(4, 4, dtype=torch.bool))

        lm_stage([x], model, 20, 1e-12, 1e-3, max_step)
        return x, rendered

    loose, rendered = run(1e-14, None)
    assert float(rendered[1][1].abs()) > 1e3        # unbounded, the first step throws x[1] far away
    kept, rendered = run(1e-14, [0.5])
    assert torch.equal(kept, torch.zeros(2, dtype=torch.float64)) and len(rendered) == 1
    curved, rendered = run(1e-2, [0.5])             # the Newton step of x[1] is -0.1: inside the bounds
    assert torch.allclose(curved, torch.tensor([0.2, -0.1], dtype=torch.float64), atol=1e-6)
