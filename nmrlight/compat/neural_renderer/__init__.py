"""Drop-in `neural_renderer` API on top of nmrlight: `import nmrlight.compat.neural_renderer as nr`.

Covers the surface NMR scripts use: Renderer (camera modes 'projection', 'look_at', 'look'; outputs
rgb, silhouettes, depth), and the helpers load_obj, save_obj, look_at, look, perspective,
projection, vertices_to_faces, lighting, get_points_from_angles. Runs on CPU or CUDA (whatever
device the vertices are on). Differences from NMR are listed in renderer.py and docs/compat.md.
"""

from nmrlight.compat.neural_renderer.lighting import lighting
from nmrlight.compat.neural_renderer.mesh_io import load_obj, save_obj
from nmrlight.compat.neural_renderer.renderer import Renderer
from nmrlight.compat.neural_renderer.transforms import (
    get_points_from_angles,
    look,
    look_at,
    perspective,
    projection,
    vertices_to_faces,
)

__all__ = [
    "Renderer",
    "get_points_from_angles",
    "lighting",
    "load_obj",
    "look",
    "look_at",
    "perspective",
    "projection",
    "save_obj",
    "vertices_to_faces",
]
