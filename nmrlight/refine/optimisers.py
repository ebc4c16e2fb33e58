"""The per-stage optimisers of pose refinement: Levenberg-Marquardt, Adam and L-BFGS.

Adam and L-BFGS minimise one stage's loss over the pose parameters through `evaluate`, a closure that
renders, records the iterate (history, best pose) and runs the backward pass, returning the loss.
`steps` gives each parameter tensor its natural step (Adam's learning rate): L-BFGS works in those
units, so its first step is one Adam step and its curvature estimate starts well scaled.
Levenberg-Marquardt steps on local models (loss, gradient, Gauss-Newton Hessian) that `linearise`
makes from one render each (`nmrlight.refine.linearise`): a stage converges in a handful of renders.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.optimize
import torch

from nmrlight.refine.linearise import LocalModel

OPTIMIZERS = ("auto", "adam", "lbfgs", "lm")

Evaluate = Callable[[], float]


def _cosine(steps: int) -> Callable[[int], float]:
    def factor(i: int) -> float:
        return 0.35 + 0.65 * 0.5 * (1 + math.cos(math.pi * min(i / max(steps, 1), 1.0)))
    return factor


class LeanAdam:
    """torch.optim.Adam's arithmetic (its single-tensor CPU path, default betas and eps, one learning
    rate a tensor), op for op, so the iterates are the same bits, without the optimiser framework's
    per-step overhead (hooks, checks, state dicts: ~1.5 ms a step, a tenth of a small render)."""

    def __init__(self, parameters: list[torch.Tensor], lrs: list[float], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.parameters, self.lrs = parameters, list(lrs)
        self.beta1, self.beta2, self.eps = betas[0], betas[1], eps
        self.state: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(parameters)
        self.steps = [0] * len(parameters)

    def zero_grad(self) -> None:
        for p in self.parameters:
            p.grad = None

    @torch.no_grad()
    def step(self, factor: float = 1.0) -> None:
        """One step with learning rates lr * factor; tensors without a gradient are left alone (as Adam does)."""
        beta1, beta2 = self.beta1, self.beta2
        for k, p in enumerate(self.parameters):
            if p.grad is None:
                continue
            if self.state[k] is None:
                self.state[k] = (torch.zeros_like(p, memory_format=torch.preserve_format),
                                 torch.zeros_like(p, memory_format=torch.preserve_format))
            exp_avg, exp_avg_sq = self.state[k]
            grad = p.grad
            self.steps[k] += 1
            step = float(self.steps[k])
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1 ** step
            bias_correction2 = 1 - beta2 ** step
            step_size = self.lrs[k] * factor / bias_correction1
            denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


def adam_stage(parameters: list[torch.Tensor], steps: list[float], evaluate: Evaluate, max_iter: int,
               patience: int, min_improvement: float) -> None:
    """Adam with per-parameter steps shrinking to a third (cosine) so the last iterates settle; stops
    after `patience` evaluations that do not beat the stage's best by `min_improvement`."""
    optimiser = LeanAdam(parameters, steps)
    schedule = _cosine(max_iter)
    best, stale = math.inf, 0
    for i in range(max_iter):
        optimiser.zero_grad()
        value = evaluate()
        if value < best - min_improvement:
            best, stale = value, 0
        else:
            stale += 1
            if stale >= patience:
                break
        optimiser.step(schedule(i))


def lbfgs_stage(parameters: list[torch.Tensor], steps: list[float], evaluate: Evaluate, max_evaluations: int,
                tolerance: float) -> None:
    """scipy's L-BFGS-B on the parameters in units of `steps`, at most `max_evaluations` renders.

    Stops when a step improves the loss by less than `tolerance` relative (scipy's ftol) or the
    budget is spent; leaves the parameters at the best point L-BFGS accepted.
    """
    base = [p.detach().clone() for p in parameters]
    sizes = [p.numel() for p in parameters]
    scale = np.concatenate([np.full(n, s, dtype=np.float64) for n, s in zip(sizes, steps, strict=True)])
    bounds = np.cumsum([0, *sizes])

    def load(x: np.ndarray) -> None:
        with torch.no_grad():
            for k, (p, b) in enumerate(zip(parameters, base, strict=True)):
                delta = torch.as_tensor(x[bounds[k]:bounds[k + 1]] * scale[bounds[k]:bounds[k + 1]], dtype=p.dtype)
                p.copy_(b + delta.view_as(p))

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        load(x)
        for p in parameters:
            p.grad = None
        value = evaluate()
        grad = np.concatenate([np.zeros(p.numel()) if p.grad is None else p.grad.detach().double().reshape(-1).numpy()
                               for p in parameters])
        if not math.isfinite(value) or not np.isfinite(grad).all():
            return math.inf, np.zeros_like(grad)
        return value, grad * scale

    result = scipy.optimize.minimize(fun, np.zeros(len(scale)), jac=True, method="L-BFGS-B",
                                     options={"maxfun": max_evaluations, "maxiter": max_evaluations,
                                              "ftol": tolerance, "gtol": 1e-9})
    load(result.x)


def lm_stage(parameters: list[torch.Tensor], linearise: Callable[[], LocalModel], max_evaluations: int,
             tolerance: float, damping: float, max_step: list[float] | None = None) -> None:
    """Levenberg-Marquardt on the local models `linearise` makes (one render each, see
    `nmrlight.refine.linearise`), at most `max_evaluations` renders.

    A step solves (H + lambda diag(H)) d = -g; it is kept when the loss falls, lambda then following
    the gain ratio (actual over predicted fall, Nielsen's rule), and undone otherwise (lambda x nu,
    nu doubling). Stops when a kept step gains less than `tolerance` of the loss (the convergence
    test), when lambda grows past 1e6 (no descent left) or when the budget is spent; the parameters
    end at the last kept pose. `max_step` (one bound a parameter tensor) is a trust region: a step
    that moves any component further is refused unrendered, as a failed step is (a local model nearly
    flat in one direction, e.g. depth without the prior, would otherwise throw the car to infinity).
    """
    model = linearise()
    used, lam, nu = 1, damping, 2.0
    sizes = [p.numel() for p in parameters]
    while used < max_evaluations:
        diagonal = torch.diagonal(model.hessian)
        top = float(diagonal.max())
        if not math.isfinite(top) or top <= 0.0:
            # a flat local model (no pixel the terms see moves with the pose: the car left its window
            # or hides wholly behind others) defines no step; the damped solve would scale the
            # gradient by ~1e21 and throw the car to infinity
            break
        diagonal = diagonal.clamp_min(1e-9 * top)
        step = -torch.linalg.solve(model.hessian + lam * torch.diag(diagonal), model.gradient)
        if not torch.isfinite(step).all():
            break
        if max_step is not None and any(float(d.abs().max()) > bound for d, bound
                                        in zip(torch.split(step, sizes), max_step, strict=True)):
            lam, nu = lam * nu, nu * 2.0
            if lam > 1e6:
                break
            continue
        predicted = -float(model.gradient @ step + 0.5 * step @ model.hessian @ step)
        saved = [p.detach().clone() for p in parameters]
        with torch.no_grad():
            for p, d in zip(parameters, torch.split(step, sizes), strict=True):
                p.add_(d.to(p.dtype).view_as(p))
        trial = linearise()
        used += 1
        gain = model.loss - trial.loss
        if gain > 0:
            rho = gain / max(predicted, 1e-30)
            model, nu = trial, 2.0
            lam *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
            if gain <= tolerance * max(abs(model.loss), 1e-12):
                break
        else:
            with torch.no_grad():
                for p, s in zip(parameters, saved, strict=True):
                    p.copy_(s)
            lam, nu = lam * nu, nu * 2.0
            if lam > 1e6:
                break
