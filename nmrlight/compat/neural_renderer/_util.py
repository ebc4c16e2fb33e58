"""Small conversions shared by the neural_renderer compatibility layer.

NMR accepts lists, tuples, numpy arrays and tensors almost everywhere, batched or not; these
helpers turn such values into tensors on the device of the data being rendered, keeping autograd
graphs of tensors that scripts pass in (nn.Parameters included).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nmrlight.errors import NmrlightError


def to_tensor(value, like: torch.Tensor) -> torch.Tensor:
    """`value` as a floating tensor on `like`'s device (and dtype, unless it is already a float tensor).

    Tensors keep their graph: only a device/dtype move is applied, which is differentiable.
    """
    if torch.is_tensor(value):
        dtype = value.dtype if value.is_floating_point() else like.dtype
        return value.to(device=like.device, dtype=dtype)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value)).to(device=like.device, dtype=like.dtype)
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def size_pair(value, name: str) -> tuple[int, int]:
    """An image size given as an int (square) or a (width, height) pair -> (width, height)."""
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        value = [int(v) for v in np.asarray(value.tolist()).reshape(-1)]
        if len(value) == 1:
            value = value[0]
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        width = height = int(value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        width, height = int(value[0]), int(value[1])
    else:
        raise NmrlightError(f"{name} must be an int or a (width, height) pair, got {value!r}")
    if width <= 0 or height <= 0:
        raise NmrlightError(f"{name} must be positive, got {(width, height)}")
    return width, height


def item(value: torch.Tensor, index: int, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """Batch item `index` of a value that is either unbatched (`shape`) or batched (N, *shape).

    A batch of one is broadcast to every item, as NMR's broadcasting did.
    """
    size = math.prod(shape)
    if value.numel() % size != 0:
        raise NmrlightError(f"{name} must have shape {shape} or (batch, *{shape}), got {tuple(value.shape)}")
    flat = value.reshape(-1, *shape)
    if flat.shape[0] == 1:
        return flat[0]
    if index >= flat.shape[0]:
        raise NmrlightError(f"{name} has a batch of {flat.shape[0]}, item {index} was asked for")
    return flat[index]


def check_batched(tensor: torch.Tensor, name: str, last: int | None = 3) -> None:
    if tensor.ndim != 3 or (last is not None and tensor.shape[-1] != last):
        raise NmrlightError(f"{name} must have shape (batch, N, {last}), got {tuple(tensor.shape)}")
