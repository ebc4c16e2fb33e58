"""The OUT folder of a run: run.json (which inputs made it), atomic per-image results (resume)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from nmrlight.errors import NmrlightError
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.result import ImageResult

RUN_FILE = "run.json"
IMAGES_DIR = "images"
# Config fields that do not change what is computed: a run may resume with other values.
_NON_RESULT_FIELDS = ("device", "threads", "gif_dir")

Log = Callable[[str], None]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _config_key(config: RefineConfig) -> dict:
    d = dataclasses.asdict(config)
    for name in _NON_RESULT_FIELDS:
        d.pop(name, None)
    return json.loads(json.dumps(d, default=str))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temp file next to `path`, then rename it over `path` (never a half file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def result_path(out: Path, image_id: str) -> Path:
    """OUT/images/<ImageId>.json (the id percent-encoded when it is not a plain file name)."""
    name = quote(image_id, safe="-_.")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return Path(out) / IMAGES_DIR / f"{name}.json"


def save_result(out: Path, result: ImageResult) -> None:
    """Write one image's result atomically (what makes runs resumable)."""
    write_atomic(result_path(out, result.image_id), json.dumps(result.to_dict(), indent=1) + "\n")


def load_result(out: Path, image_id: str) -> ImageResult | None:
    """The stored result of `image_id`, None when missing or unreadable."""
    path = result_path(out, image_id)
    try:
        return ImageResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_results(out: str | Path) -> tuple[list[ImageResult], list[str]]:
    """Every OUT/images/*.json, in the run's input order when its predictions file is readable
    (else by file name); unreadable files are skipped and named in the second list."""
    out = Path(out)
    folder = out / IMAGES_DIR
    if not folder.is_dir():
        raise NmrlightError(f"{out}: no {IMAGES_DIR}/ folder of per-image results (is it a refine --out folder?)")
    results, bad = [], []
    for path in sorted(folder.glob("*.json")):
        try:
            results.append(ImageResult.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            bad.append(f"{path}: {exc}")
    order = _input_order(out)
    if order:
        rank = {image_id: k for k, image_id in enumerate(order)}
        results.sort(key=lambda r: (rank.get(r.image_id, len(rank)), r.image_id))
    return results, bad


def _input_order(out: Path) -> list[str]:
    try:
        predictions = Path(json.loads((out / RUN_FILE).read_text())["inputs"]["predictions"])
        from nmrlight.refine.inputs import read_inputs

        return list(read_inputs(predictions).order)
    except (OSError, ValueError, KeyError, TypeError):
        return []


def prepare_out(options, log: Log) -> None:
    """Create OUT and check (or write) run.json: refuse other inputs unless --force (which starts over)."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / IMAGES_DIR).mkdir(exist_ok=True)
    inputs = {
        "data": str(Path(options.data).resolve()),
        "predictions": str(Path(options.predictions).resolve()),
        "predictions_sha256": _sha256(options.predictions),
        "config": _config_key(options.config),
    }
    run_file = out / RUN_FILE
    if run_file.is_file():
        try:
            old = json.loads(run_file.read_text()).get("inputs", {})
        except ValueError:
            old = {}
        diff = [k for k in ("data", "predictions_sha256", "config") if old.get(k) != inputs[k]]
        if diff and not options.force:
            raise NmrlightError(f"output folder {out} holds a run with other inputs ({', '.join(diff)} "
                                "differ); use another --out, or --force to discard its results and start over")
        if diff:
            stale = list((out / IMAGES_DIR).glob("*.json"))
            for path in stale:
                path.unlink()
            log(f"--force: discarded {len(stale)} earlier image results made with other inputs")
    record = {"nmrlight": _version(), "inputs": inputs, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_atomic(run_file, json.dumps(record, indent=1) + "\n")


def _version() -> str:
    from nmrlight import __version__

    return __version__
