"""The renderer: scene + camera + lighting -> image, silhouettes, depth, normals, ids.

Data flows one way: pose the objects (scene), project them (camera), find the visible face of
each pixel (raster), interpolate and shade the covered pixels (shade), write them over the
background, then make the edges differentiable (analytic anti-aliasing and/or soft silhouettes).
Only covered and boundary pixels do per-pixel work; dense outputs are written by scatter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
import torch

from nmrlight.camera import Camera
from nmrlight.errors import NmrlightError
from nmrlight.raster import kernels
from nmrlight.raster.antialias import EdgeBlend, edge_blend, silhouette_edges
from nmrlight.raster.rasterize import (
    DepthBase,
    EdgeList,
    ScreenMesh,
    Visibility,
    interpolate_barycentrics,
    pick_backend,
    rasterize,
)
from nmrlight.raster.soft import soft_silhouettes
from nmrlight.scene import MeshObject, PackedScene, Scene
from nmrlight.shade import Lighting, face_normals, sample_textures, vertex_normals

EDGE_MODES = ("analytic", "soft", "none")
ALL_OUTPUTS = frozenset({"image", "alpha", "object_alpha", "depth", "normals"})


@dataclass
class RenderOutput:
    """Dense per-pixel outputs; integer maps use -1 for background, depth is 0 there."""

    image: torch.Tensor | None          # (C, H, W) shaded, over the background
    alpha: torch.Tensor | None          # (H, W) union silhouette
    object_alpha: torch.Tensor | None   # (N, H, W) visible silhouette of each object
    depth: torch.Tensor | None          # (H, W) camera z of the visible surface
    normals: torch.Tensor | None        # (3, H, W) unit normals (camera frame, toward the camera)
    visibility: Visibility
    screen: ScreenMesh
    face_object: torch.Tensor           # (F,) object index of each packed face
    blend: EdgeBlend | None = None      # the analytic edges' blend (pixels, weights, crossing geometry)

    @property
    def face_id(self) -> torch.Tensor:
        """(H, W) long: index of the visible packed face, -1 for background."""
        return self.visibility.face_id.long()

    @property
    def object_id(self) -> torch.Tensor:
        """(H, W) long: index of the visible object in the scene, -1 for background."""
        vis = self.visibility
        ids = torch.full((vis.face_id.numel(),), -1, dtype=torch.long, device=vis.pixels.device)
        ids[vis.pixels] = self.face_object[vis.pixel_face]
        return ids.view(vis.face_id.shape)


def project_scene(packed: PackedScene, camera: Camera) -> ScreenMesh:
    """Camera-frame vertices -> pixel coordinates; faces crossing the near or far plane are culled."""
    verts = packed.vertices
    uv, in_front = camera.project(verts)
    z = verts[:, 2]
    in_range = in_front & (z < camera.far)
    safe_z = torch.where(in_range, z, torch.full_like(z, camera.near))
    valid = in_range[packed.faces].all(dim=1)
    return ScreenMesh(uv, safe_z, packed.faces, valid.detach(), camera.height, camera.width)


def _same_camera(a: Camera, b: Camera) -> bool:
    return a is b or (a.width == b.width and a.height == b.height and a.near == b.near and a.far == b.far
            and torch.equal(a.K.cpu(), b.K.cpu())
            and (a.dist_coeffs is None) == (b.dist_coeffs is None)
            and (a.dist_coeffs is None or torch.equal(a.dist_coeffs.cpu(), b.dist_coeffs.cpu())))


@dataclass
class FixedLayer:
    """Objects that stay put over many renders with one camera (the other cars while one car is
    refined): posed, projected, searched for silhouette edges and z-buffered once, by `fixed_layer`.

    `render(scene, ..., fixed=layer)` renders the scene's objects followed by these, with the same
    pixels and gradients as rendering all of them, at the cost of the moving objects only (plus the
    visible-edge search, which needs every edge). The objects must not change in place meanwhile.
    """

    objects: list[MeshObject]
    camera: Camera
    packed: PackedScene
    screen: ScreenMesh
    edges: EdgeList            # local vertex and face indices
    face_id: np.ndarray        # (H, W) int32 local face index, -1 where none
    inv_depth: np.ndarray      # (H, W) float32
    joined: dict = field(default_factory=dict)   # offset copies, per size of the moving part

    def join(self, moving: PackedScene) -> tuple[PackedScene, EdgeList, DepthBase]:
        """The packed scene of moving + fixed objects, the fixed edges and depth base in its numbering."""
        nv, nf, no = len(moving.vertices), len(moving.faces), moving.num_objects
        key = (nv, nf, no)
        if key not in self.joined:
            fixed = self.packed
            adjacency = torch.where(fixed.adjacency >= 0, fixed.adjacency + nf, fixed.adjacency)
            edge_faces = torch.where(self.edges.faces >= 0, self.edges.faces + nf, self.edges.faces)
            face_id = np.where(self.face_id >= 0, self.face_id + nf, self.face_id).astype(np.int32)
            self.joined[key] = (fixed.faces + nv, fixed.face_object + no, adjacency,
                                EdgeList(self.edges.vertices + nv, edge_faces, self.edges.inside),
                                DepthBase(face_id, self.inv_depth, nf))
        faces, owner, adjacency, edges, base = self.joined[key]
        packed = PackedScene(
            vertices=torch.cat([moving.vertices, self.packed.vertices]),
            faces=torch.cat([moving.faces, faces]),
            face_object=torch.cat([moving.face_object, owner]),
            vertex_offset=moving.vertex_offset + [o + nv for o in self.packed.vertex_offset],
            face_offset=moving.face_offset + [o + nf for o in self.packed.face_offset],
            adjacency=torch.cat([moving.adjacency, adjacency]),
            num_objects=no + self.packed.num_objects)
        return packed, edges, base


def fixed_layer(objects: list[MeshObject], camera: Camera, backend: str = "auto") -> FixedLayer | None:
    """Prepare objects that will not move for repeated renders with `camera` (None when there are
    none, or off the CPU, where the whole scene is simply rendered every time)."""
    if not objects or pick_backend(objects[0].vertices.device, backend) != "numba":
        return None
    with torch.no_grad():
        packed = Scene(objects).pack()
        packed.vertices = packed.vertices.detach()
        screen = project_scene(packed, camera)
        edges = silhouette_edges(screen, packed.adjacency, "numba")
    face_id = np.empty((camera.height, camera.width), dtype=np.int32)
    inv_depth = np.empty((camera.height, camera.width), dtype=np.float32)
    kernels.rasterize_zbuffer(screen.uv.double().numpy(), screen.z.double().numpy(), screen.faces.numpy(),
                              screen.valid.numpy(), camera.height, camera.width, face_id, inv_depth,
                              4 * numba.get_num_threads())
    return FixedLayer(list(objects), camera, packed, screen, edges, face_id, inv_depth)


def _background(background, channels: int, camera: Camera, like: torch.Tensor) -> torch.Tensor:
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.ndim == 0:
        bg = bg.expand(channels)
    if bg.ndim == 1:
        if bg.shape[0] != channels:
            raise NmrlightError(f"background has {bg.shape[0]} channels, the scene has {channels}")
        return bg[:, None].expand(channels, camera.height * camera.width)
    if bg.shape != (channels, camera.height, camera.width):
        raise NmrlightError(f"background image must have shape {(channels, camera.height, camera.width)}, "
                            f"got {tuple(bg.shape)}")
    return bg.reshape(channels, -1)


def _pixel_albedo(scene: Scene, packed: PackedScene, face: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Albedo (N, C) of covered pixels from per-object, per-face, per-vertex albedo or textures."""
    objects = scene.objects
    if all(o.textures is None and o.albedo.ndim == 1 for o in objects):
        table = torch.stack([o.albedo.to(packed.vertices) for o in objects])
        return table[packed.face_object[face]]
    owner = packed.face_object[face]
    out = torch.zeros(len(face), scene.channels, dtype=packed.vertices.dtype, device=face.device)
    for index, obj in enumerate(objects):
        sel = torch.nonzero(owner == index).squeeze(1)
        if len(sel) == 0:
            continue
        local = face[sel] - packed.face_offset[index]
        if obj.textures is not None:
            value = sample_textures(obj.textures.to(packed.vertices), local, bary[sel])
        elif obj.albedo.ndim == 1:
            value = obj.albedo.to(packed.vertices).expand(len(sel), -1)
        elif obj.albedo.shape[0] == len(obj.faces):
            value = obj.albedo.to(packed.vertices)[local]
        else:
            corners = obj.faces.to(face.device)[local]
            value = (obj.albedo.to(packed.vertices)[corners] * bary[sel, :, None]).sum(1)
        out = out.index_copy(0, sel, value)
    return out


class _Paint(torch.autograd.Function):
    """out = background with columns `pix` replaced by `values`; backward gathers, never clones twice."""

    @staticmethod
    def forward(ctx, background, pix, values):
        out = background.clone(memory_format=torch.contiguous_format)
        out[:, pix] = values
        ctx.save_for_backward(pix)
        return out

    @staticmethod
    def backward(ctx, grad):
        (pix,) = ctx.saved_tensors
        grad_background = None
        if ctx.needs_input_grad[0]:
            grad_background = grad.clone()
            grad_background[:, pix] = 0
        return grad_background, None, grad[:, pix] if ctx.needs_input_grad[2] else None


def paint(background: torch.Tensor, pix: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Write per-pixel values (C, N) at flat pixel indices into a copy of background (C, H*W)."""
    return _Paint.apply(background, pix, values)


def _object_frame_vertices(scene: Scene, packed: PackedScene) -> torch.Tensor:
    return torch.cat([o.vertices.to(packed.vertices) for o in scene.objects])


def _flip_toward_camera(flip: torch.Tensor, *normals: torch.Tensor) -> list[torch.Tensor]:
    return [torch.where(flip, -n, n) for n in normals]


def _shade_flat(scene: Scene, packed: PackedScene, vis: Visibility, bary: torch.Tensor | None,
                lighting: Lighting | None, outputs: frozenset[str]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-face normals and light, gathered per pixel: (pixel normals or None, pixel colours or None).

    Only the faces that cover a pixel are shaded (row by row the same arithmetic as shading all of
    them, so the same values): most faces of a car are hidden or outside a small window.
    """
    if not outputs & {"normals", "image"}:
        return None, None
    used, local = _visible_faces(vis.pixel_face, len(packed.faces))
    faces = packed.faces[used]
    n_cam = face_normals(packed.vertices, faces)
    n_light = n_cam
    if lighting is not None and lighting.frame == "object":
        n_light = face_normals(_object_frame_vertices(scene, packed), faces)
    if lighting is None or lighting.two_sided:
        # a planar face is seen from one side everywhere: test it at the centroid
        flip = ((n_cam * packed.vertices[faces].mean(1)).sum(-1, keepdim=True) > 0).detach()
        n_cam, n_light = _flip_toward_camera(flip, n_cam, n_light)
    pixel_normals = n_cam[local] if "normals" in outputs else None
    if "image" not in outputs:
        return pixel_normals, None
    if bary is None:  # uniform albedo per object: colour each face once, then gather
        face_color = torch.stack([o.albedo.to(packed.vertices) for o in scene.objects])[packed.face_object[used]]
        if lighting is not None:
            face_color = face_color * lighting.intensity(n_light)
        return pixel_normals, face_color[local]
    color = _pixel_albedo(scene, packed, vis.pixel_face, bary)
    if lighting is not None:
        color = color * lighting.intensity(n_light)[local]
    return pixel_normals, color


def _visible_faces(pixel_face: torch.Tensor, num_faces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The faces that cover some pixel, ascending, and each pixel's index into them."""
    seen = torch.zeros(num_faces, dtype=torch.bool, device=pixel_face.device)
    seen[pixel_face] = True
    used = torch.nonzero(seen).squeeze(1)
    slot = torch.zeros(num_faces, dtype=torch.long, device=pixel_face.device)
    slot[used] = torch.arange(len(used), device=pixel_face.device)
    return used, slot[pixel_face]


def _shade_smooth(scene: Scene, packed: PackedScene, vis: Visibility, bary: torch.Tensor,
                  lighting: Lighting | None, outputs: frozenset[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Interpolated vertex normals, turned toward the camera per pixel, lit per pixel."""
    corners = packed.faces[vis.pixel_face]
    weights = bary[..., None]
    points = (packed.vertices[corners] * weights).sum(1)
    vn = vertex_normals(packed.vertices, packed.faces)
    pixel_normals = torch.nn.functional.normalize((vn[corners] * weights).sum(1), dim=-1)
    light_normals = pixel_normals
    if lighting is not None and lighting.frame == "object":
        vo = vertex_normals(_object_frame_vertices(scene, packed), packed.faces)
        light_normals = torch.nn.functional.normalize((vo[corners] * weights).sum(1), dim=-1)
    if lighting is None or lighting.two_sided:
        flip = ((pixel_normals * points).sum(-1, keepdim=True) > 0).detach()
        pixel_normals, light_normals = _flip_toward_camera(flip, pixel_normals, light_normals)
    if "image" not in outputs:
        return pixel_normals, None
    color = _pixel_albedo(scene, packed, vis.pixel_face, bary)
    if lighting is not None:
        color = color * lighting.intensity(light_normals)
    return pixel_normals, color


def render(scene: Scene, camera: Camera, lighting: Lighting | None = None, *,
           background: torch.Tensor | float = 0.0, edges: str = "analytic", sigma: float = 1.0,
           normals: str = "flat", outputs: frozenset[str] | set[str] = ALL_OUTPUTS,
           backend: str = "auto", fixed: FixedLayer | None = None, alpha_objects: int | None = None
           ) -> RenderOutput:
    """Render a scene of posed meshes.

    edges: "analytic" blends colours and silhouettes across silhouette/occlusion edges with exact
    gradients (use near convergence); "soft" makes the silhouettes soft with width `sigma` pixels
    (wide basin, use far from the solution) and keeps analytic edges for the image; "none" is a
    plain hard rasteriser (no edge gradients). normals: "flat" (per face, as NMR) or "smooth"
    (interpolated vertex normals). Without lighting the image is the albedo (unlit).
    fixed: objects drawn after the scene's that do not move between renders (see `fixed_layer`).
    alpha_objects: make `object_alpha` for the first that many objects only (the rest cost work).
    """
    if edges not in EDGE_MODES:
        raise NmrlightError(f"edges must be one of {EDGE_MODES}, got {edges!r}")
    if normals not in ("flat", "smooth"):
        raise NmrlightError(f"normals must be 'flat' or 'smooth', got {normals!r}")
    outputs = frozenset(outputs)
    unknown = outputs - ALL_OUTPUTS
    if unknown:
        raise NmrlightError(f"unknown render outputs {sorted(unknown)}; choose from {sorted(ALL_OUTPUTS)}")
    device = scene.objects[0].vertices.device
    if camera.device != device:
        camera = camera.to(device)
    want_blend = edges != "none" and bool(outputs & {"image", "alpha", "object_alpha"})
    if fixed is not None and (pick_backend(camera.device, backend) != "numba"
                              or not _same_camera(fixed.camera, camera)):
        scene, fixed = Scene(scene.objects + fixed.objects), None
    if fixed is None:
        packed = scene.pack()
        screen = project_scene(packed, camera)
        sil = silhouette_edges(screen, packed.adjacency, backend) if want_blend else None
        vis = rasterize(screen, edges=sil, backend=backend)
    else:
        moving = scene.pack()
        near = project_scene(moving, camera)
        packed, fixed_edges, base = fixed.join(moving)
        screen = ScreenMesh(torch.cat([near.uv, fixed.screen.uv.to(near.uv)]),
                            torch.cat([near.z, fixed.screen.z.to(near.z)]), packed.faces,
                            torch.cat([near.valid, fixed.screen.valid]), camera.height, camera.width)
        sil = None
        if want_blend:
            own = silhouette_edges(near, moving.adjacency, backend)
            sil = EdgeList(*(torch.cat([a, b]) for a, b in zip(
                (own.vertices, own.faces, own.inside),
                (fixed_edges.vertices, fixed_edges.faces, fixed_edges.inside), strict=True)))
        vis = rasterize(screen, edges=sil, backend=backend, base=base)
        scene = Scene(scene.objects + fixed.objects)
    need_bary = ("depth" in outputs or normals == "smooth"
                 or ("image" in outputs and any(o.textures is not None or o.albedo.ndim == 2
                                                for o in scene.objects)))
    bary, pixel_depth = interpolate_barycentrics(screen, vis) if need_bary else (None, None)
    height, width = camera.height, camera.width
    npix = height * width
    dtype, device = packed.vertices.dtype, packed.vertices.device
    pix = vis.pixels

    image = alpha = object_alpha = depth = normal_map = None
    blend = edge_blend(screen, vis, sil) if want_blend else None
    if normals == "flat":
        pixel_normals, color = _shade_flat(scene, packed, vis, bary, lighting, outputs)
    else:
        pixel_normals, color = _shade_smooth(scene, packed, vis, bary, lighting, outputs)

    if "image" in outputs:
        channels = scene.channels
        bg = _background(background, channels, camera, color)
        image = paint(bg, pix, color.T)
        if blend is not None:
            image = blend.apply(image)
        image = image.view(channels, height, width)

    soft = None
    if edges == "soft" and outputs & {"alpha", "object_alpha"}:
        soft = soft_silhouettes(screen, packed.face_object, packed.num_objects, sigma, backend=backend)

    if "alpha" in outputs:
        if soft is not None:
            alpha = 1 - torch.prod(1 - soft, dim=0)
        else:
            alpha = torch.zeros(1, npix, dtype=dtype, device=device)
            alpha[:, pix] = 1.0
            if blend is not None:
                alpha = blend.apply(alpha)
            alpha = alpha.view(height, width)

    if "object_alpha" in outputs:
        if soft is not None:
            object_alpha = _occlude_soft(soft, scene, packed)[:alpha_objects]
        else:
            count = packed.num_objects if alpha_objects is None else min(alpha_objects, packed.num_objects)
            owner = packed.face_object[vis.pixel_face]
            keep = owner < count
            object_alpha = torch.zeros(count, npix, dtype=dtype, device=device)
            object_alpha[owner[keep], pix[keep]] = 1.0
            if blend is not None:
                object_alpha = blend.apply(object_alpha)
            object_alpha = object_alpha.view(count, height, width)

    if "depth" in outputs:
        depth = torch.zeros(npix, dtype=dtype, device=device).index_copy(0, pix, pixel_depth.to(dtype))
        depth = depth.view(height, width)
    if "normals" in outputs:
        normal_map = torch.zeros(3, npix, dtype=dtype, device=device)
        normal_map = normal_map.index_copy(1, pix, pixel_normals.T.contiguous()).view(3, height, width)

    return RenderOutput(image, alpha, object_alpha, depth, normal_map, vis, screen, packed.face_object, blend)


def _occlude_soft(soft: torch.Tensor, scene: Scene, packed: PackedScene) -> torch.Tensor:
    """Visible soft silhouettes: each object is hidden by the soft silhouettes of nearer objects.

    Objects are ordered by the mean depth of their vertices (cars do not interpenetrate).
    """
    depths = torch.stack([
        packed.vertices[packed.vertex_offset[i]: packed.vertex_offset[i] + len(o.vertices), 2].detach().mean()
        for i, o in enumerate(scene.objects)
    ])
    order = torch.argsort(depths)
    keep = torch.ones_like(soft[0])
    result = [None] * len(order)
    for index in order.tolist():
        result[index] = soft[index] * keep
        keep = keep * (1 - soft[index])
    return torch.stack(result)
