"""`Renderer`: NMR's nn.Module, rendering through nmrlight's own renderer.

How NMR's cameras map onto nmrlight (camera frame x right, y down, z forward; pixel (c, r) centred
at (c + 1/2, r + 1/2), row 0 at the top):

* 'projection': NMR computes x_cam = R x + t, pinhole K, OpenCV distortion, normalises u by the
  photograph's width and v (flipped) by its height, rasterises at image_size and flips the image
  back, so row r of the output samples v = (r + 1/2) * orig_height / image_height. That is exactly
  an nmrlight Camera whose K is NMR's K scaled by image_size / orig_size per axis, with the object
  posed by (R, t): MeshObject(rotation=R, translation=t).
* 'look_at' / 'look': NMR's camera frame has y UP (x right, z forward) and a perspective of
  half-angle `viewing_angle` maps tan(viewing_angle) to the image border, with row 0 at the top
  (NMR's vertical flip). In nmrlight terms: rotation diag(1, -1, 1) R_look (R_look's rows are NMR's
  camera axes), translation -rotation @ eye, and fx = W / (2 tan a), fy = H / (2 tan a), principal
  point at the image centre. perspective=False (orthographic, NMR's x, y used as NDC directly) is
  rendered as a pinhole camera pushed back by D = 1e4 times the scene's depth extent, with focal
  length D W / 2 (relative position error |z| / D <= 1e-4, depth resolution about 1e-3 of the
  extent since nmrlight's z-buffer is float32); its depth is reported as NMR's z.

Faces, fill_back and lighting: NMR rasterises a face only when it is counter-clockwise on screen,
fill_back=True adds every face reversed, so every face is seen from both sides; its lighting normal
is then always the one facing the camera. nmrlight's two-sided lighting is that rule, so we use it
in both cases; fill_back=False drops the faces NMR would cull (clockwise on screen, computed from the
projected vertices per item) before rendering. NMR lights the vertices as passed (before the camera
transform): Lighting(frame="object"). `light_in_camera_frame=True` lights in NMR's camera frame
instead (the frame after look_at / R, t; for the look modes y is up in it, as in NMR).

Why that option matters: when (R, t) is an object's pose (Kaggle-style refinement) object-frame light
turns with the object, so shading is identical for every rotation and tells the optimiser nothing
about it; light fixed in the camera frame (one sun for the whole photograph) makes shading depend on
the pose.

Edges and gradients: NMR's anti_aliasing=True rendered at 2x and averaged 2x2; its edge gradients
were an approximation (a linear ramp between a pixel and the first pixel the edge would reach).
We render with nmrlight's analytic edge anti-aliasing (edges="analytic") whatever anti_aliasing
says: edge pixels are blended by the exact crossing of the silhouette edge, and gradients with
respect to vertices, R, t, K and eye are the exact derivatives of that blend (exact in the limit of
small pixels). Images therefore differ from NMR's at boundary pixels (no 2x supersampling) and
gradients differ from NMR's approximate ones. Pass edges="none" for a hard image without edge
gradients, or edges="soft" (with sigma) for soft silhouettes with a wider basin.

Depth: camera z of the visible surface, `far` on the background (NMR's depth map is initialised to
far); not blended at edges (NMR averaged 2x2 supersampled depth). NMR's per-pixel near/far test is
replaced by nmrlight's, which drops faces crossing the near or far plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from nmrlight.camera import Camera
from nmrlight.compat.neural_renderer._util import check_batched, item, size_pair, to_tensor
from nmrlight.compat.neural_renderer.transforms import look_rotation
from nmrlight.errors import NmrlightError
from nmrlight.render import render
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting

MODES = (None, "rgb", "silhouettes", "depth")
CAMERA_MODES = ("projection", "look_at", "look")
ORTHO_FACTOR = 1e4
_FLIP_Y = (1.0, -1.0, 1.0)


@dataclass
class _View:
    """One batch item's camera in nmrlight terms."""

    camera: Camera
    rotation: torch.Tensor
    translation: torch.Tensor
    depth_offset: float          # subtract from nmrlight depth to get NMR's z (orthographic)
    light_to_camera: torch.Tensor  # maps a direction in NMR's camera frame to nmrlight's


class Renderer(nn.Module):
    """Drop-in for `neural_renderer.Renderer` (same arguments, defaults and output shapes).

    image_size and orig_size are an int (square) or a (width, height) pair. Attributes may be
    reassigned between calls with lists, arrays, tensors or nn.Parameters (eye, K, R, t,
    dist_coeffs, light_*, viewing_angle, perspective, ...); they are read at every forward and
    receive gradients. Extra keyword-only options: `light_in_camera_frame` (see the module doc),
    `edges` ("analytic" default, "soft", "none") and `sigma` (soft edge width in pixels).
    """

    def __init__(self, image_size=256, anti_aliasing=True, background_color=(0, 0, 0), fill_back=True,
                 camera_mode="projection", K=None, R=None, t=None, dist_coeffs=None, orig_size=1024,
                 perspective=True, viewing_angle=30, camera_direction=(0, 0, 1), near=0.1, far=100,
                 light_intensity_ambient=0.5, light_intensity_directional=0.5, light_color_ambient=(1, 1, 1),
                 light_color_directional=(1, 1, 1), light_direction=(0, 1, 0), *,
                 light_in_camera_frame: bool = False, edges: str = "analytic", sigma: float = 1.0):
        super().__init__()
        if camera_mode not in CAMERA_MODES:
            raise NmrlightError(f"camera_mode must be one of {CAMERA_MODES}, got {camera_mode!r}")
        self.image_size = image_size
        self.anti_aliasing = anti_aliasing
        self.background_color = background_color
        self.fill_back = fill_back
        self.camera_mode = camera_mode
        self.K, self.R, self.t = K, R, t
        self.dist_coeffs = dist_coeffs
        self.orig_size = orig_size
        self.perspective = perspective
        self.viewing_angle = viewing_angle
        self.camera_direction = camera_direction
        self.eye = [0.0, 0.0, -(1.0 / math.tan(math.radians(viewing_angle)) + 1.0)]
        self.near, self.far = near, far
        self.light_intensity_ambient = light_intensity_ambient
        self.light_intensity_directional = light_intensity_directional
        self.light_color_ambient = light_color_ambient
        self.light_color_directional = light_color_directional
        self.light_direction = light_direction
        self.light_in_camera_frame = light_in_camera_frame
        self.edges = edges
        self.sigma = sigma
        self.rasterizer_eps = 1e-3   # kept for scripts that read it; unused

    # --- NMR's public methods ----------------------------------------------------------------------
    def forward(self, vertices, faces, textures=None, mode=None, K=None, R=None, t=None, dist_coeffs=None,
                orig_size=None):
        """mode None -> (rgb (B,3,H,W), depth (B,H,W), alpha (B,H,W)); 'rgb'; 'silhouettes'; 'depth'."""
        if mode not in MODES:
            raise ValueError("mode should be one of None, 'rgb', 'silhouettes' or 'depth'")
        if mode is None:
            return self.render(vertices, faces, textures, K, R, t, dist_coeffs, orig_size)
        if mode == "rgb":
            return self.render_rgb(vertices, faces, textures, K, R, t, dist_coeffs, orig_size)
        if mode == "silhouettes":
            return self.render_silhouettes(vertices, faces, K, R, t, dist_coeffs, orig_size)
        return self.render_depth(vertices, faces, K, R, t, dist_coeffs, orig_size)

    def render(self, vertices, faces, textures=None, K=None, R=None, t=None, dist_coeffs=None, orig_size=None):
        """(rgb, depth, alpha) as NMR's `render`."""
        out = self._run(vertices, faces, textures, {"image", "alpha", "depth"}, K, R, t, dist_coeffs, orig_size)
        return out["image"], out["depth"], out["alpha"]

    def render_rgb(self, vertices, faces, textures=None, K=None, R=None, t=None, dist_coeffs=None, orig_size=None):
        return self._run(vertices, faces, textures, {"image"}, K, R, t, dist_coeffs, orig_size)["image"]

    def render_silhouettes(self, vertices, faces, K=None, R=None, t=None, dist_coeffs=None, orig_size=None):
        return self._run(vertices, faces, None, {"alpha"}, K, R, t, dist_coeffs, orig_size)["alpha"]

    def render_depth(self, vertices, faces, K=None, R=None, t=None, dist_coeffs=None, orig_size=None):
        return self._run(vertices, faces, None, {"depth"}, K, R, t, dist_coeffs, orig_size)["depth"]

    # --- sizes (int or (width, height)) -------------------------------------------------------------
    @property
    def image_size(self):
        return self._image_size

    @image_size.setter
    def image_size(self, value) -> None:
        size_pair(value, "image_size")
        self._image_size = value

    @property
    def orig_size(self):
        return self._orig_size

    @orig_size.setter
    def orig_size(self, value) -> None:
        size_pair(value, "orig_size")
        self._orig_size = value

    # --- internals ----------------------------------------------------------------------------------
    def _view(self, index: int, like: torch.Tensor, K, R, t, dist_coeffs, orig_size) -> _View:
        width, height = size_pair(self.image_size, "image_size")
        near, far = float(self.near), float(self.far)
        if self.camera_mode == "projection":
            K = self.K if K is None else K
            R = self.R if R is None else R
            t = self.t if t is None else t
            dist_coeffs = self.dist_coeffs if dist_coeffs is None else dist_coeffs
            orig = size_pair(self.orig_size if orig_size is None else orig_size, "orig_size")
            if K is None or R is None or t is None:
                raise NmrlightError("camera_mode='projection' needs K, R and t (set them on the Renderer or pass them)")
            K_b = item(to_tensor(K, like), index, (3, 3), "K")
            scale = torch.tensor([width / orig[0], height / orig[1], 1.0], dtype=K_b.dtype, device=K_b.device)
            dist = None
            if dist_coeffs is not None:
                dist = item(to_tensor(dist_coeffs, like), index, (5,), "dist_coeffs")
                if not dist.requires_grad and not bool(dist.detach().abs().gt(0).any()):
                    dist = None
            camera = Camera(K_b * scale[:, None], width, height, near, far, dist_coeffs=dist)
            eye3 = torch.eye(3, dtype=like.dtype, device=like.device)
            return _View(camera, item(to_tensor(R, like), index, (3, 3), "R"),
                         item(to_tensor(t, like), index, (3,), "t"), 0.0, eye3)
        eye = item(to_tensor(self.eye, like), index, (3,), "eye")
        up = torch.tensor([0.0, 1.0, 0.0], dtype=like.dtype, device=like.device)
        if self.camera_mode == "look_at":
            direction = -eye
        else:
            direction = item(to_tensor(self.camera_direction, like), index, (3,), "camera_direction")
        flip = torch.tensor(_FLIP_Y, dtype=like.dtype, device=like.device)
        rotation = flip[:, None] * look_rotation(direction[None], up[None])[0]
        translation = -(rotation @ eye)
        if self.perspective:
            tan = math.tan(math.radians(float(self.viewing_angle)))
            fx, fy, offset = width / (2 * tan), height / (2 * tan), 0.0
        else:
            with torch.no_grad():
                extent = float(((like - eye) @ rotation[2]).abs().max())
            offset = ORTHO_FACTOR * max(extent, 1e-6)
            fx, fy = offset * width / 2, offset * height / 2
            translation = translation + torch.tensor([0.0, 0.0, offset], dtype=like.dtype, device=like.device)
        K_nl = torch.tensor([[fx, 0.0, width / 2], [0.0, fy, height / 2], [0.0, 0.0, 1.0]],
                            dtype=like.dtype, device=like.device)
        camera = Camera(K_nl, width, height, near + offset, far + offset)
        return _View(camera, rotation, translation, offset, torch.diag(flip))

    def _lighting(self, index: int, like: torch.Tensor, view: _View) -> Lighting:
        def value(v, shape, name):
            v = to_tensor(v, like)
            return item(v, index, shape, name) if v.numel() > math.prod(shape) else v.reshape(shape)

        direction = value(self.light_direction, (3,), "light_direction")
        if self.light_in_camera_frame:
            frame = "camera"
            direction = view.light_to_camera @ direction
        else:
            frame = "object"
            # nmrlight turns a normal toward the camera using the posed winding; a reflecting R
            # reverses that winding, so the light must be mirrored too (exact: relu(-n . -d)).
            if float(torch.linalg.det(view.rotation.detach().double())) < 0:
                direction = -direction
        return Lighting(ambient=value(self.light_intensity_ambient, (), "light_intensity_ambient"),
                        directional=value(self.light_intensity_directional, (), "light_intensity_directional"),
                        direction=direction,
                        color_ambient=value(self.light_color_ambient, (3,), "light_color_ambient"),
                        color_directional=value(self.light_color_directional, (3,), "light_color_directional"),
                        frame=frame, two_sided=True)

    def _front_faces(self, obj: MeshObject, camera: Camera) -> torch.Tensor:
        """Faces NMR rasterises without fill_back: counter-clockwise on screen with y up.

        nmrlight's pixel v grows downward, so those are the faces with negative signed area in (u, v).
        """
        with torch.no_grad():
            uv, _ = camera.project(obj.posed_vertices())
            tri = uv[obj.faces]
            area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
                    - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))
        return area <= 0

    def _run(self, vertices, faces, textures, outputs: set[str], K, R, t, dist_coeffs, orig_size) -> dict:
        check_batched(vertices, "vertices")
        check_batched(faces, "faces")
        batch = vertices.shape[0]
        if faces.shape[0] not in (1, batch):
            raise NmrlightError(f"faces batch {faces.shape[0]} does not match vertices batch {batch}")
        if textures is not None and (textures.ndim != 6 or textures.shape[1] != faces.shape[1]):
            raise NmrlightError(f"textures must have shape (B, F, T, T, T, 3), got {tuple(textures.shape)}")
        out_dtype = vertices.dtype
        results: dict[str, list[torch.Tensor]] = {k: [] for k in outputs}
        for b in range(batch):
            like = vertices[b]
            view = self._view(b, like, K, R, t, dist_coeffs, orig_size)
            face_b = faces[b if faces.shape[0] > 1 else 0].to(like.device).long()
            tex_b = None
            if "image" in outputs and textures is not None:
                tex_b = textures[b if textures.shape[0] > 1 else 0].to(device=like.device, dtype=like.dtype)
            obj = MeshObject(like, face_b, rotation=view.rotation, translation=view.translation,
                             albedo=torch.ones(3 if "image" in outputs else 1, dtype=like.dtype, device=like.device),
                             textures=tex_b)
            if not self.fill_back:
                keep = self._front_faces(obj, view.camera)
                obj = MeshObject(like, face_b[keep], rotation=view.rotation, translation=view.translation,
                                 albedo=obj.albedo, textures=tex_b[keep] if tex_b is not None else None)
            item_out = self._render_item(obj, view, outputs, b, like)
            for key, value in item_out.items():
                results[key].append(value.to(out_dtype))
        return {key: torch.stack(values) for key, values in results.items()}

    def _render_item(self, obj: MeshObject, view: _View, outputs: set[str], index: int,
                     like: torch.Tensor) -> dict[str, torch.Tensor]:
        width, height = view.camera.width, view.camera.height
        background = item(to_tensor(self.background_color, like), index, (3,), "background_color")
        far = float(self.far)
        if len(obj.faces) == 0:     # everything culled: NMR gives the background
            empty = {"image": background[:, None, None].expand(3, height, width).clone(),
                     "alpha": torch.zeros(height, width, dtype=like.dtype, device=like.device),
                     "depth": torch.full((height, width), far, dtype=like.dtype, device=like.device)}
            return {k: empty[k] for k in outputs}
        lighting = self._lighting(index, like, view) if "image" in outputs else None
        nl_outputs = set(outputs)
        out = render(Scene([obj]), view.camera, lighting, background=background, edges=self.edges,
                     sigma=self.sigma, outputs=nl_outputs)
        result = {}
        if "image" in outputs:
            result["image"] = out.image
        if "alpha" in outputs:
            result["alpha"] = out.alpha
        if "depth" in outputs:
            covered = out.depth > 0
            result["depth"] = torch.where(covered, out.depth - view.depth_offset, torch.full_like(out.depth, far))
        return result

