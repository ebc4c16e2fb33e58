"""NMR's load_obj and save_obj: Wavefront .obj in and out, with NMR's normalisation and texture cubes.

Parsing is our own (no trimesh: it would merge and reorder vertices, and NMR keeps the file's order).
Polygons are fan-triangulated as NMR did. Textures: per-material `Kd` colours and `map_Kd` images
sampled at the texture coordinates (bilinear, REPEAT wrapping only); faces without a material get
grey 0.5, as in NMR. Other wrap modes, and the nearest-neighbour option, are not implemented.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from nmrlight.errors import NmrlightError
from nmrlight.shade import sample_textures


def _read_obj(path: str):
    verts, uvs, faces, tex_faces, materials, mtllib = [], [], [], [], [], None
    material = ""
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            key = parts[0]
            if key == "v":
                verts.append([float(x) for x in parts[1:4]])
            elif key == "vt":
                uvs.append([float(x) for x in parts[1:3]])
            elif key == "usemtl":
                material = parts[1] if len(parts) > 1 else ""
            elif key == "mtllib" and mtllib is None:
                mtllib = parts[1]
            elif key == "f":
                corners = [c.split("/") for c in parts[1:]]
                vi = [int(c[0]) for c in corners]
                ti = [int(c[1]) if len(c) > 1 and c[1] else 0 for c in corners]
                for k in range(len(corners) - 2):
                    faces.append((vi[0], vi[k + 1], vi[k + 2]))
                    tex_faces.append((ti[0], ti[k + 1], ti[k + 2]))
                    materials.append(material)
    if not verts or not faces:
        raise NmrlightError(f"{path}: no vertices or faces found")
    v = np.asarray(verts, dtype=np.float32)
    f = np.asarray(faces, dtype=np.int64)
    f = np.where(f < 0, f + len(v) + 1, f) - 1   # negative indices count from the end
    return v, f, np.asarray(uvs, dtype=np.float32).reshape(-1, 2), np.asarray(tex_faces, dtype=np.int64), \
        materials, mtllib


def _read_mtl(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    colors, images, name = {}, {}, ""
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "newmtl":
                name = parts[1]
            elif parts[0] == "Kd":
                colors[name] = np.asarray([float(x) for x in parts[1:4]], dtype=np.float32)
            elif parts[0] == "map_Kd":
                images[name] = parts[-1]
    return colors, images


def _cube_weights(texture_size: int) -> np.ndarray:
    """Barycentric weights (T, T, T, 3) of each texel of an NMR texture cube (normalised indices)."""
    r = np.arange(texture_size, dtype=np.float64) / max(texture_size - 1, 1)
    w = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1)
    total = w.sum(-1, keepdims=True)
    return np.where(total > 0, w / np.where(total > 0, total, 1), 1.0 / 3.0)


def _sample_image(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of an (H, W, 3) image at texture coordinates (..., 2), v = 0 at the bottom."""
    h, w = image.shape[:2]
    wrapped = np.where((uv < 0) | (uv > 1), uv % 1.0, uv)    # REPEAT, keeping 1.0 at the far edge
    u = wrapped[..., 0] * (w - 1)
    v = (1.0 - wrapped[..., 1]) * (h - 1)
    x0, y0 = np.floor(u).astype(int), np.floor(v).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (u - x0)[..., None], (v - y0)[..., None]
    return ((1 - fx) * (1 - fy) * image[y0, x0] + fx * (1 - fy) * image[y0, x1]
            + (1 - fx) * fy * image[y1, x0] + fx * fy * image[y1, x1])


def load_textures(filename_obj: str, filename_mtl: str, texture_size: int) -> torch.Tensor:
    """(F, T, T, T, 3) texture cubes from an .obj's materials (see the module docstring)."""
    from PIL import Image

    _, faces, uvs, tex_faces, materials, _ = _read_obj(filename_obj)
    colors, images = _read_mtl(filename_mtl)
    textures = np.full((len(faces), texture_size, texture_size, texture_size, 3), 0.5, dtype=np.float32)
    names = np.asarray(materials)
    for name, color in colors.items():
        textures[names == name] = color
    weights = _cube_weights(texture_size)
    for name, image_name in images.items():
        sel = np.flatnonzero(names == name)
        if len(sel) == 0 or len(uvs) == 0:
            continue
        image_path = os.path.join(os.path.dirname(filename_obj), image_name)
        image = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 255.0
        corner_uv = uvs[np.clip(tex_faces[sel] - 1, 0, len(uvs) - 1)]         # (S, 3, 2)
        uv = np.einsum("ijkc,scd->sijkd", weights, corner_uv)
        textures[sel] = _sample_image(image, uv)
    return torch.from_numpy(textures)


def load_obj(filename_obj: str, normalization: bool = True, texture_size: int = 4, load_texture: bool = False,
             texture_wrapping: str = "REPEAT", use_bilinear: bool = True):
    """Load an .obj: (vertices (V, 3) float32, faces (F, 3) int32[, textures (F, T, T, T, 3)]).

    normalization=True maps the bounding box into [-1, 1] as NMR did: shift the minimum to 0, divide
    by the largest coordinate, scale by 2 and centre (the longest side spans [-1, 1]).
    Tensors are on the CPU (NMR put them on CUDA); move them with `.to(device)`.
    """
    if texture_wrapping != "REPEAT" or not use_bilinear:
        raise NmrlightError("load_obj supports only texture_wrapping='REPEAT' with use_bilinear=True")
    v, f, _, _, _, mtllib = _read_obj(filename_obj)
    vertices = torch.from_numpy(v)
    faces = torch.from_numpy(f.astype(np.int32))
    textures = None
    if load_texture:
        if mtllib is None:
            raise NmrlightError(f"{filename_obj}: load_texture=True but the file names no mtllib")
        textures = load_textures(filename_obj, os.path.join(os.path.dirname(filename_obj), mtllib), texture_size)
    if normalization:
        vertices = vertices - vertices.min(0)[0][None, :]
        vertices = vertices / vertices.abs().max()
        vertices = vertices * 2
        vertices = vertices - vertices.max(0)[0][None, :] / 2
    if load_texture:
        return vertices, faces, textures
    return vertices, faces


def create_texture_image(textures: torch.Tensor, texture_size_out: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """An atlas image (H, W, 3) with one tile per face, and per-face corner texture coordinates (F, 3, 2).

    Tile layout as NMR: corner 0 at the tile's top-left, 1 bottom-left, 2 bottom-right; each pixel of
    the lower-left half holds the cube sampled at its barycentrics.
    """
    textures = textures.detach().cpu().float()
    num_faces = textures.shape[0]
    s = texture_size_out
    cols = int((num_faces - 1) ** 0.5) + 1
    rows = (num_faces - 1) // cols + 1
    image = np.zeros((rows * s, cols * s, 3), dtype=np.float32)
    py, px = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    # barycentrics in a tile with corners (0, 0), (0, s-1), (s-1, s-1) in (x, y)
    w2 = px / max(s - 1, 1)
    w1 = (py - px) / max(s - 1, 1)
    w0 = 1 - w1 - w2
    bary = torch.from_numpy(np.stack([w0, w1, w2], -1).reshape(-1, 3).clip(0, 1).astype(np.float32))
    for face in range(num_faces):
        r, c = divmod(face, cols)
        color = sample_textures(textures, torch.full((len(bary),), face, dtype=torch.long), bary)
        image[r * s:(r + 1) * s, c * s:(c + 1) * s] = color.numpy().reshape(s, s, 3)
    corners = np.zeros((num_faces, 3, 2), dtype=np.float32)
    face_ids = np.arange(num_faces)
    col, row = face_ids % cols, face_ids // cols
    corners[:, 0] = np.stack([col * s, row * s], -1)
    corners[:, 1] = np.stack([col * s, (row + 1) * s - 1], -1)
    corners[:, 2] = np.stack([(col + 1) * s - 1, (row + 1) * s - 1], -1)
    corners[..., 0] /= image.shape[1] - 1
    corners[..., 1] = 1 - corners[..., 1] / (image.shape[0] - 1)   # obj texture v grows upward
    return image, corners


def save_obj(filename: str, vertices: torch.Tensor, faces: torch.Tensor, textures: torch.Tensor | None = None) -> None:
    """Write (V, 3) vertices and (F, 3) faces to an .obj; textures (F, T, T, T, 3) go to a .png atlas + .mtl."""
    if vertices.ndim != 2 or faces.ndim != 2:
        raise NmrlightError("save_obj takes unbatched (V, 3) vertices and (F, 3) faces")
    path = Path(filename)
    verts = vertices.detach().cpu().numpy()
    tri = faces.detach().cpu().numpy().astype(np.int64)
    lines = [f"# {path.name}", "#", ""]
    if textures is not None:
        from PIL import Image

        image, corners = create_texture_image(textures)
        stem = path.with_suffix("")
        Image.fromarray((image.clip(0, 1) * 255).round().astype(np.uint8)).save(f"{stem}.png")
        Path(f"{stem}.mtl").write_text(f"newmtl material_1\nmap_Kd {stem.name}.png\n")
        lines += [f"mtllib {stem.name}.mtl", ""]
    lines += [f"v {x:.8f} {y:.8f} {z:.8f}" for x, y, z in verts]
    lines.append("")
    if textures is not None:
        lines += [f"vt {u:.8f} {v:.8f}" for u, v in corners.reshape(-1, 2)]
        lines += ["", "usemtl material_1"]
        lines += [f"f {a + 1}/{3 * i + 1} {b + 1}/{3 * i + 2} {c + 1}/{3 * i + 3}" for i, (a, b, c) in enumerate(tri)]
    else:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in tri]
    path.write_text("\n".join(lines) + "\n")
