"""`nmrlight render`: draw the cars of a pose file into shaded pictures and label masks.

For each image of the pose file: DIR/<ImageId>.png (gray, shaded with a fixed light over black) and
DIR/<ImageId>_mask.png (value k = k-th car of the row, 0 background; a car hidden behind others or
outside the frame has no pixels). Bad rows and missing meshes skip that image; all are reported and
the command exits with status 1 at the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from nmrlight.camera import Camera
from nmrlight.errors import NmrlightError
from nmrlight.io.dataset import DataFolder
from nmrlight.io.poses import CarPose

LIGHT = dict(ambient=0.5, directional=0.6, direction=(0.0, -1.0, -0.5))


def render_cars(folder: DataFolder, cars: list[CarPose], camera: Camera, default_model: int = -1
                ) -> tuple[np.ndarray, np.ndarray]:
    """Shaded gray image (H, W) in [0, 1] and label image (H, W) of `cars` posed in `camera`."""
    import torch

    from nmrlight.render import render
    from nmrlight.rotations import kaggle_to_matrix
    from nmrlight.scene import MeshObject, Scene
    from nmrlight.shade import Lighting

    if not cars:
        return np.zeros((camera.height, camera.width)), np.zeros((camera.height, camera.width), np.int32)
    objects = []
    for k, car in enumerate(cars, start=1):
        model = car.model_type if car.model_type >= 0 else default_model
        if model < 0:
            raise NmrlightError(f"car {k} has no model_type; pass --model-type")
        mesh = folder.car(model)
        R = torch.as_tensor(kaggle_to_matrix(np.asarray(car.rotation, dtype=np.float64)), dtype=torch.float32)
        objects.append(MeshObject(vertices=torch.as_tensor(mesh.object_vertices(), dtype=torch.float32),
                                  faces=torch.as_tensor(mesh.faces), rotation=R,
                                  translation=torch.tensor(car.translation, dtype=torch.float32),
                                  albedo=torch.tensor([0.8])))
    with torch.no_grad():
        out = render(Scene(objects), camera, Lighting(**LIGHT), background=0.0, edges="analytic",
                     outputs={"image"})
    object_id = out.object_id.numpy()
    labels = np.where(object_id >= 0, object_id + 1, 0).astype(np.int32)
    return out.image[0].numpy(), labels


def register(app: typer.Typer) -> None:
    @app.command()
    def render(
        data: Path = typer.Argument(..., help="Data folder (car_models_json/, camera/, images/)."),
        poses: Path = typer.Option(..., "--poses", help="Pose file (train format, or --submission)."),
        out: Path = typer.Option(..., "--out", help="Output folder (<ImageId>.png, <ImageId>_mask.png)."),
        scale: float = typer.Option(1.0, "--scale", help="Render at this fraction of the image size."),
        submission: bool = typer.Option(False, "--submission", help="Poses are in the submission format."),
        model_type: int = typer.Option(-1, "--model-type",
                                       help="Model for cars without one (submission format)."),
    ) -> None:
        """Render each image's cars (gray, shaded) and their label mask (k = k-th car of the row)."""
        from rich.progress import track

        from nmrlight.io.images import write_image
        from nmrlight.io.masks import write_label_mask
        from nmrlight.io.poses import read_poses_lenient

        folder = DataFolder(data)
        camera = folder.camera()
        if scale != 1.0:
            camera = camera.scaled(scale)
        table, failed = read_poses_lenient(poses, submission=submission)
        out.mkdir(parents=True, exist_ok=True)
        done = 0
        for image_id, cars in track(list(table.items()), description="rendering", transient=True):
            try:
                image, labels = render_cars(folder, cars, camera, model_type)
            except NmrlightError as exc:
                failed[image_id] = str(exc)
                continue
            write_image(out / f"{image_id}.png", image)
            write_label_mask(out / f"{image_id}_mask.png", labels)
            done += 1
        for image_id, message in failed.items():
            typer.echo(f"skipped {image_id}: {message}", err=True)
        typer.echo(f"rendered {done} pictures to {out}" + (f", {len(failed)} failed" if failed else ""))
        if failed:
            raise typer.Exit(1)
