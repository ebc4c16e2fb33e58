"""Scenes: several posed meshes in one camera frame, packed for rasterisation.

Each object has object-frame vertices, faces, a rotation R and translation t (X_cam = R X + t) and
an albedo. For ApolloCar3D cars the object-frame vertices are the JSON vertices with y flipped and R
is the Kaggle projection rotation (see nmrlight.rotations).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from nmrlight.errors import NmrlightError


@dataclass
class MeshObject:
    """One mesh with its pose and albedo. Tensors may require grad.

    albedo: shape (C,) for a uniform colour (C = 1 grayscale or 3 RGB), (F, C) per face or (V, C) per
    vertex; textures, when given, are NMR-style (F, T, T, T, C) cubes sampled by barycentrics.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    rotation: torch.Tensor | None = None
    translation: torch.Tensor | None = None
    albedo: torch.Tensor | float = 1.0
    textures: torch.Tensor | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.vertices = torch.as_tensor(self.vertices)
        if not self.vertices.is_floating_point():
            self.vertices = self.vertices.float()
        self.faces = torch.as_tensor(self.faces)
        label = f"object {self.name!r}" if self.name else "object"
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise NmrlightError(f"{label}: vertices must have shape (V, 3), got {tuple(self.vertices.shape)}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise NmrlightError(f"{label}: faces must have shape (F, 3), got {tuple(self.faces.shape)}")
        if self.faces.is_floating_point() or self.faces.dtype == torch.bool:
            raise NmrlightError(f"{label}: faces must be an integer tensor, got {self.faces.dtype}")
        if not torch.isfinite(self.vertices).all():
            raise NmrlightError(f"{label}: vertices contain NaN or inf")
        if self.faces.numel() and (int(self.faces.min()) < 0 or int(self.faces.max()) >= len(self.vertices)):
            raise NmrlightError(
                f"{label}: face indices must lie in [0, {len(self.vertices) - 1}], "
                f"got [{int(self.faces.min())}, {int(self.faces.max())}]")
        self.faces = self.faces.long()
        if self.rotation is not None:
            self.rotation = torch.as_tensor(self.rotation, dtype=self.vertices.dtype)
            if self.rotation.shape != (3, 3):
                raise NmrlightError(f"{label}: rotation must be 3x3, got {tuple(self.rotation.shape)}")
        if self.translation is not None:
            self.translation = torch.as_tensor(self.translation, dtype=self.vertices.dtype)
            if self.translation.shape != (3,):
                raise NmrlightError(f"{label}: translation must have shape (3,), got {tuple(self.translation.shape)}")
            if not torch.isfinite(self.translation).all():
                raise NmrlightError(f"{label}: translation contains NaN or inf")
        albedo = torch.as_tensor(self.albedo, dtype=self.vertices.dtype)
        if albedo.ndim == 0:
            albedo = albedo.reshape(1)
        if albedo.ndim == 1 or (albedo.ndim == 2 and albedo.shape[0] in (len(self.faces), len(self.vertices))):
            self.albedo = albedo
        else:
            raise NmrlightError(f"{label}: albedo must have shape (C,), (F, C) or (V, C), got {tuple(albedo.shape)}")
        if self.textures is not None and (self.textures.ndim != 5 or self.textures.shape[0] != len(self.faces)):
            raise NmrlightError(f"{label}: textures must have shape (F, T, T, T, C), got {tuple(self.textures.shape)}")

    @property
    def channels(self) -> int:
        if self.textures is not None:
            return int(self.textures.shape[-1])
        return int(self.albedo.shape[-1])

    def posed_vertices(self) -> torch.Tensor:
        """Vertices in the camera frame: R X + t."""
        v = self.vertices
        if self.rotation is not None:
            v = v @ self.rotation.T
        if self.translation is not None:
            v = v + self.translation
        return v


@dataclass
class PackedScene:
    """All objects of a scene concatenated: what the rasteriser and shader consume."""

    vertices: torch.Tensor        # (V, 3) camera frame
    faces: torch.Tensor           # (F, 3) long, indices into the packed vertices
    face_object: torch.Tensor     # (F,) long, object index of each face
    vertex_offset: list[int]      # first packed vertex of each object
    face_offset: list[int]        # first packed face of each object
    adjacency: torch.Tensor       # (F, 3) long, face across edge k (v_k -> v_{k+1}), -1 at borders
    num_objects: int


@dataclass
class Scene:
    """Several mesh objects in one photograph, lit by one lighting in the camera frame."""

    objects: list[MeshObject] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.objects = list(self.objects)
        if not self.objects:
            raise NmrlightError("a scene needs at least one object")

    def __len__(self) -> int:
        return len(self.objects)

    @property
    def channels(self) -> int:
        channels = {obj.channels for obj in self.objects}
        if len(channels) != 1:
            raise NmrlightError(f"all objects of a scene need the same number of colour channels, got {channels}")
        return channels.pop()

    def pack(self) -> PackedScene:
        """Pose every object and concatenate them into one mesh (face adjacency cached per object)."""
        verts, faces, owner, adj = [], [], [], []
        v_off, f_off = [], []
        nv = nf = 0
        for index, obj in enumerate(self.objects):
            v_off.append(nv)
            f_off.append(nf)
            verts.append(obj.posed_vertices())
            faces.append(obj.faces + nv)
            owner.append(torch.full((len(obj.faces),), index, dtype=torch.long))
            a = face_adjacency(obj.faces)
            adj.append(torch.where(a >= 0, a + nf, a))
            nv += len(obj.vertices)
            nf += len(obj.faces)
        device = verts[0].device
        return PackedScene(
            vertices=torch.cat(verts),
            faces=torch.cat(faces).to(device),
            face_object=torch.cat(owner).to(device),
            vertex_offset=v_off,
            face_offset=f_off,
            adjacency=torch.cat(adj).to(device),
            num_objects=len(self.objects),
        )


_ADJ_CACHE: dict[tuple, torch.Tensor] = {}


def face_adjacency(faces: torch.Tensor) -> torch.Tensor:
    """For each face and edge k (v_k -> v_{k+1 mod 3}) the one other face sharing that edge, else -1.

    Edges shared by more than two faces (non-manifold) count as borders: each of them can be a
    silhouette. Cached by the faces' content, since meshes are reused across renders.
    """
    f = faces.detach().cpu().numpy().astype(np.int64)
    key = (f.shape, hash(f.tobytes()))
    cached = _ADJ_CACHE.get(key)
    if cached is not None:
        return cached
    nf = len(f)
    a = f[:, [0, 1, 2]]
    b = f[:, [1, 2, 0]]
    lo = np.minimum(a, b).ravel()
    hi = np.maximum(a, b).ravel()
    edge_key = lo * (int(f.max(initial=0)) + 1) + hi
    order = np.argsort(edge_key, kind="stable")
    sorted_keys = edge_key[order]
    result = np.full(nf * 3, -1, dtype=np.int64)
    if len(sorted_keys):
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        counts = np.diff(np.r_[starts, len(sorted_keys)])
        pairs = starts[counts == 2]
        first, second = order[pairs], order[pairs + 1]
        result[first] = second // 3
        result[second] = first // 3
    out = torch.from_numpy(result.reshape(nf, 3))
    if len(_ADJ_CACHE) > 256:
        _ADJ_CACHE.clear()
    _ADJ_CACHE[key] = out
    return out
