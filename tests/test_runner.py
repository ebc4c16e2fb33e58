"""Data-set runs (nmrlight.refine.runner): local processes and Ray give the single-process result (the same
bytes), runs resume without losing or repeating images, and a broken image fails alone with its predictions
passed through. Tiny synthetic data and a short optimisation keep this fast."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fingerprint
from PIL import Image

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import read_poses_lenient
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.runner import RunOptions, load_result, result_path, run_refine

FAST = dict(stages=((32, "soft", 1.0, 3),), lighting_size=32, lighting_cars=1, max_neighbours=2)
BROKEN = "ID_synth_000002"      # its mask is replaced by a wrong-size PNG
BAD_ROW = "ID_unreadable"       # a predictions row that cannot be parsed
CRASH_ENV = "NMRLIGHT_TEST_CRASH_ONCE"


def crash_once_then_refine(data, image_id, cars, config):
    """The real refine_image, but the worker process dies the first time it meets the image named in
    $NMRLIGHT_TEST_CRASH_ONCE ("ImageId@marker-file"): a lost worker, as an OOM kill leaves it."""
    target, _, marker = os.environ.get(CRASH_ENV, "").partition("@")
    if image_id == target and not Path(marker).exists():
        Path(marker).touch()
        os._exit(17)
    from nmrlight.refine.image import refine_image

    return refine_image(data, image_id, cars, config)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """4 pictures at scale 0.2 with ~3 cars each, one broken mask, one unreadable predictions row."""
    from nmrlight.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("runner") / "data"
    synthesize(root, 4, seed=3, config=SynthConfig(scale=0.2, cars_mean=3.0, cars_max=4))
    Image.fromarray(np.zeros((7, 9), np.uint8)).save(root / "masks" / f"{BROKEN}.png")
    lines = (root / "predictions.csv").read_text().splitlines()
    lines.insert(2, f"{BAD_ROW},1 2 3,1.0")
    (root / "predictions.csv").write_text("\n".join(lines) + "\n")
    return root


def _options(data: Path, out: Path, **kw) -> RunOptions:
    return RunOptions(data=data, predictions=data / "predictions.csv", out=out, config=RefineConfig(**FAST),
                      progress=False, **kw)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """The single-process run everything else is compared with."""
    out = tmp_path_factory.mktemp("runner") / "single"
    summary = run_refine(_options(data, out, workers=1), log=lambda _m: None)
    assert summary.exit_code == 3 and set(summary.failed) == {BROKEN} and set(summary.bad_rows) == {BAD_ROW}
    return out


def _order(path: Path) -> list[str]:
    return [line.split(",", 1)[0] for line in path.read_text().splitlines()[1:]]


def _same_poses(a: Path, b: Path) -> None:
    """The same refined.csv, byte for byte (tests/test_determinism.py covers every number of a run)."""
    assert _order(a) == _order(b)
    assert a.read_bytes() == b.read_bytes()


def test_single_process_run(data, reference):
    out = reference
    inputs = (data / "predictions.csv").read_text().splitlines()
    refined = (out / "refined.csv").read_text().splitlines()
    assert _order(out / "refined.csv") == [line.split(",", 1)[0] for line in inputs[1:]]
    assert f"{BAD_ROW},1 2 3,1.0" in refined                      # passed through as written
    predicted, _ = read_poses_lenient(data / "predictions.csv")
    got, _ = read_poses_lenient(out / "refined.csv")
    assert got[BROKEN] == predicted[BROKEN]                       # failed image: predictions kept
    assert [c.model_type for c in got[BROKEN]] == [c.model_type for c in predicted[BROKEN]]
    failed = load_result(out, BROKEN)
    assert failed.status == "failed" and failed.attempts == 2 and "mask" in failed.error.lower()
    for image_id in predicted:
        if image_id != BROKEN:
            assert load_result(out, image_id).status == "ok"
            assert [c.model_type for c in got[image_id]] == [c.model_type for c in predicted[image_id]]
    assert any(got[i] != predicted[i] for i in predicted if i != BROKEN)   # something was refined
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["failed"] == {BROKEN: failed.error} and run["inputs"]["predictions_sha256"]
    for name in ("lighting.csv", "report.json", "report.html"):
        assert (out / name).is_file(), name


def test_two_processes_match_single(data, reference, tmp_path, monkeypatch):
    """Two spawned workers, one of which dies on its first image: same result as one process."""
    target = next(i for i in _order(data / "predictions.csv") if i not in (BROKEN, BAD_ROW))
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, f"{target}@{marker}")
    messages: list[str] = []
    summary = run_refine(_options(data, tmp_path / "out", workers=2, refine_fn=f"{__name__}:crash_once_then_refine"),
                         log=messages.append)
    assert marker.exists() and any("worker process died" in m for m in messages)
    assert summary.workers == 2 and summary.backend == "local-process" and set(summary.failed) == {BROKEN}
    assert load_result(tmp_path / "out", target).attempts == 2
    _same_poses(tmp_path / "out" / "refined.csv", reference / "refined.csv")
    assert fingerprint(tmp_path / "out") == fingerprint(reference)   # every number, timings left out


def test_ray_matches_single(data, reference, tmp_path):
    """A Ray the caller started is used (and left running): the same result as one process."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        summary = run_refine(_options(data, tmp_path, ray=True), log=lambda _m: None)
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert summary.backend == "ray-task" and summary.workers == 2 and set(summary.failed) == {BROKEN}
    _same_poses(tmp_path / "refined.csv", reference / "refined.csv")
    assert fingerprint(tmp_path) == fingerprint(reference)


def test_resume_after_partial_run(data, reference, tmp_path):
    """OUT holding some finished images (as a killed run leaves it): only the rest is refined."""
    ids = list(read_poses_lenient(data / "predictions.csv")[0])
    done = [i for i in ids if i != BROKEN][:2]
    (tmp_path / "images").mkdir()
    for image_id in done:
        shutil.copy(result_path(reference, image_id), result_path(tmp_path, image_id))
    shutil.copy(reference / "run.json", tmp_path / "run.json")
    messages: list[str] = []
    summary = run_refine(_options(data, tmp_path, workers=1), log=messages.append)
    assert summary.resumed == 2 and summary.refined_now == len(ids) - 2
    _same_poses(tmp_path / "refined.csv", reference / "refined.csv")
    assert sorted(p.name for p in (tmp_path / "images").glob("*.json")) == sorted(f"{i}.json" for i in ids)
    # a second run has nothing left but the failed image, which it retries
    again = run_refine(_options(data, tmp_path, workers=1), log=lambda _m: None)
    assert again.resumed == len(ids) - 1 and again.refined_now == 1 and set(again.failed) == {BROKEN}


def test_refuses_other_inputs(data, reference, tmp_path):
    shutil.copytree(reference, tmp_path / "out")
    options = _options(data, tmp_path / "out", workers=1)
    options.config.losses = "both"   # any setting other than the reference run's (the default)
    with pytest.raises(NmrlightError, match="other inputs"):
        run_refine(options, log=lambda _m: None)


def test_selection_and_cli_errors(data, tmp_path):
    with pytest.raises(NmrlightError, match="not in the predictions"):
        run_refine(_options(data, tmp_path, images=["nope"]), log=lambda _m: None)
    with pytest.raises(NmrlightError, match="not both"):
        run_refine(_options(data, tmp_path, images=[BROKEN], limit=1), log=lambda _m: None)
    from typer.testing import CliRunner

    from nmrlight.cli import app

    result = CliRunner().invoke(app, ["refine", str(data), "-p", str(data / "predictions.csv"), "-o",
                                      str(tmp_path / "o"), "--losses", "bogus"])
    assert result.exit_code != 0 and "losses" in str(result.exception)


def test_limit_refines_the_first_images(data, tmp_path):
    summary = run_refine(_options(data, tmp_path, limit=1, submission=True, workers=1), log=lambda _m: None)
    first = _order(data / "predictions.csv")[0]
    assert summary.images == 1 and _order(tmp_path / "refined.csv") == [first]
    assert (tmp_path / "submission.csv").read_text().startswith("ImageId,PredictionString\n" + first)


def test_ray_missing_is_a_clear_error(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` now raises ImportError
    with pytest.raises(NmrlightError, match=r"pip install 'nmrlight\[ray\]'"):
        run_refine(_options(data, tmp_path, ray=True), log=lambda _m: None)
