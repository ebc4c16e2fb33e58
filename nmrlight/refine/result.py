"""What refining one image produces: per-car outcomes, the learned lighting, timing and status.

An ImageResult is the unit of work of a data-set run: it is written atomically as JSON as soon as
an image is done (so runs resume and lose nothing), and merged into refined.csv, lighting.csv and
report.json at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from nmrlight.io.poses import CarPose


def _pose_to_dict(pose: CarPose) -> dict:
    return {"model_type": int(pose.model_type), "rotation": [float(x) for x in pose.rotation],
            "translation": [float(x) for x in pose.translation], "confidence": float(pose.confidence)}


def _pose_from_dict(d: dict) -> CarPose:
    return CarPose(int(d["model_type"]), tuple(float(x) for x in d["rotation"]),
                   tuple(float(x) for x in d["translation"]), float(d.get("confidence", 1.0)))


@dataclass
class LightingResult:
    """Learned NMR lighting of one photograph (camera frame, direction toward the light)."""

    ambient: float
    directional: float
    direction: tuple[float, float, float]
    cars_used: list[int] = field(default_factory=list)   # row indices of the cars it was fitted on
    albedo: dict[int, float] = field(default_factory=dict)  # per car (row index) albedo found
    loss: float | None = None
    # --- added with the material-aware fit (docs/lighting.md) ---
    materials: str = ""                   # "single" or "classes" (albedos per body, glass, dark)
    class_albedo: dict[int, list[float]] = field(default_factory=dict)  # per car: body, glass, dark albedo
    direction_sd_deg: float | None = None     # uncertainty of the direction (block bootstrap, RMS deg)
    ambient_sd: float | None = None           # uncertainty of the ambient share l_a
    consistency_deg: float | None = None      # angle between lights fitted on two disjoint halves of the cars
    consistency_ambient: float | None = None  # |l_a difference| between those halves

    def __post_init__(self) -> None:
        # JSON turns integer keys into strings
        self.albedo = {int(k): float(v) for k, v in self.albedo.items()}
        self.class_albedo = {int(k): [float(x) for x in v] for k, v in self.class_albedo.items()}


@dataclass
class CarResult:
    """One car of the row: where it started, where it ended, and how well it fits its mask."""

    index: int                     # position of the car in the image's row (0-based)
    initial: CarPose
    refined: CarPose
    status: str = "refined"        # "refined", "partly moved" (toward a rejected refinement), or why not:
                                   # "no mask", "not visible", "kept initial", ...
    iou_before: float | None = None
    iou_after: float | None = None
    loss_before: float | None = None
    loss_after: float | None = None
    iterations: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["initial"] = _pose_to_dict(self.initial)
        d["refined"] = _pose_to_dict(self.refined)
        return d

    @staticmethod
    def from_dict(d: dict) -> CarResult:
        d = dict(d)
        d["initial"] = _pose_from_dict(d["initial"])
        d["refined"] = _pose_from_dict(d["refined"])
        return CarResult(**d)

    def scene_pose(self) -> CarPose:
        """Where the photograph's other cars saw this car: its refined pose, or the detector's for a car
        reported only part of the way toward a rejected refinement ("partly moved")."""
        return self.initial if self.status == "partly moved" else self.refined


@dataclass
class ImageResult:
    """Outcome of refining one image. status "ok" or "failed" (then error says why)."""

    image_id: str
    cars: list[CarResult] = field(default_factory=list)
    lighting: LightingResult | None = None
    seconds: float = 0.0
    status: str = "ok"
    error: str | None = None
    attempts: int = 1
    warnings: list[str] = field(default_factory=list)  # inputs left out (e.g. masks that cannot be decoded)
    masks: dict = field(default_factory=dict)           # where the masks came from, how many matched

    def refined_poses(self) -> list[CarPose]:
        return [c.refined for c in self.cars]

    def to_dict(self) -> dict:
        return {
            "image_id": self.image_id,
            "cars": [c.to_dict() for c in self.cars],
            "lighting": asdict(self.lighting) if self.lighting is not None else None,
            "seconds": self.seconds,
            "status": self.status,
            "error": self.error,
            "attempts": self.attempts,
            "warnings": list(self.warnings),
            "masks": dict(self.masks),
        }

    @staticmethod
    def from_dict(d: dict) -> ImageResult:
        lighting = None
        if d.get("lighting") is not None:
            li = dict(d["lighting"])
            li["direction"] = tuple(li["direction"])
            li["albedo"] = {int(k): float(v) for k, v in li.get("albedo", {}).items()}
            lighting = LightingResult(**li)
        return ImageResult(
            image_id=d["image_id"],
            cars=[CarResult.from_dict(c) for c in d.get("cars", [])],
            lighting=lighting,
            seconds=float(d.get("seconds", 0.0)),
            status=d.get("status", "ok"),
            error=d.get("error"),
            attempts=int(d.get("attempts", 1)),
            warnings=list(d.get("warnings", [])),
            masks=dict(d.get("masks", {})),
        )
