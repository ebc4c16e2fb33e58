"""A rejected refinement still moves the car part of the way toward it (`acceptance.partial_move`)."""

from __future__ import annotations

import math

import pytest
import torch

from nmrlight.refine.acceptance import partial_move
from nmrlight.refine.pose import PoseOutcome
from nmrlight.rotations import geodesic_angle_deg, so3_exp


def _rejected(rotation: torch.Tensor, translation: tuple[float, float, float]) -> PoseOutcome:
    return PoseOutcome(rotation, torch.tensor(translation), 1.0, 0.4, 0.2, 0.45, 30, False, 0.1, visible=0.2)


def test_a_share_of_the_way_along_the_geodesic_and_the_segment() -> None:
    """A 30 deg turn about a skew axis and a 12 % move along the ray: half of it is 15 deg from either end,
    on the same axis, and the midpoint of the translations; 0 and 1 are the two ends."""
    start_r = so3_exp(torch.tensor([0.1, 2.9, -0.2], dtype=torch.float64)).float()
    axis = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    turn = so3_exp(math.radians(30.0) * axis / axis.norm()).float()
    start_t = torch.tensor([2.0, 1.5, 25.0])
    rejected = _rejected(turn @ start_r, (2.24, 1.68, 28.0))
    half = partial_move(rejected, start_r, start_t, 0.5)
    assert float(geodesic_angle_deg(half.rotation, start_r)) == pytest.approx(15.0, abs=1e-3)
    assert float(geodesic_angle_deg(half.rotation, rejected.rotation)) == pytest.approx(15.0, abs=1e-3)
    half_turn = so3_exp(math.radians(15.0) * axis / axis.norm()).float()
    assert torch.allclose(half.rotation, half_turn @ start_r, atol=1e-5)   # the same axis, not another path
    assert torch.allclose(half.translation, torch.tensor([2.12, 1.59, 26.5]), atol=1e-5)
    none, whole = partial_move(rejected, start_r, start_t, 0.0), partial_move(rejected, start_r, start_t, 1.0)
    assert torch.allclose(none.rotation, start_r, atol=1e-6) and torch.allclose(none.translation, start_t)
    assert torch.allclose(whole.rotation, rejected.rotation, atol=1e-5)
    assert torch.allclose(whole.translation, rejected.translation, atol=1e-5)
    # the fit's numbers stay the rejected refinement's, and it is still not an accepted improvement
    assert (half.iou_after, half.loss_after, half.improved) == (0.45, 0.4, False)
    assert half.rotation.dtype == torch.float32 and half.translation.dtype == torch.float32


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_bad_partial_share_is_named(share: float) -> None:
    from nmrlight.errors import NmrlightError
    from nmrlight.refine.config import RefineConfig
    from nmrlight.refine.image import check_config

    check_config(RefineConfig(accept_partial_share=0.5))
    with pytest.raises(NmrlightError, match=r"accept_partial_share \(how far .*\[0, 1\]"):
        check_config(RefineConfig(accept_partial_share=share))
