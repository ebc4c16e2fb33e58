"""Sharding does not change the result: refined.csv, lighting.csv and every number of the per-image
results are the same bytes whether a data set is refined in process with one or two kernel threads,
after a kill by two worker processes resuming, by a private local Ray, or on a joined Ray cluster (a
loopback `ray start --head` with token authentication, started and stopped here). Runs are compared
with each other, never with stored numbers. Timings (`seconds`) and attempt counts are left out.
tests/test_runner.py compares two worker processes (one of them dying) and a caller's Ray the same way.

The last stage's windows (192 render pixels) are large enough that torch would split its reductions by
thread (over 32k elements), so a torch thread count that followed --threads would show here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import fingerprint, kill_after_first_result

from nmrlight.refine.config import RefineConfig
from nmrlight.refine.runner import RunOptions, run_refine

REPO = Path(__file__).resolve().parents[1]
CONFIG = dict(stages=((48, "soft", 1.0, 3), (192, "analytic", 1.0, 3)), large_stage=None, lighting_size=48,
              lighting_cars=1, lighting_refit=False, max_neighbours=2)


# --- the compiled kernels: the same bits for any numba thread count -----------------------------------
def _kernel_outputs(threads: int) -> list:
    """Forward and backward of two overlapping procedural cars, analytic and soft edges, float32 as
    refinement renders, on `threads` numba threads (rows split into 4 x threads bands)."""
    import numba
    import torch

    from nmrlight.camera import Camera
    from nmrlight.procedural import make_car
    from nmrlight.render import render
    from nmrlight.rotations import kaggle_to_matrix
    from nmrlight.scene import MeshObject, Scene
    from nmrlight.shade import Lighting

    numba.set_num_threads(threads)
    camera = Camera.kaggle().window(1200, 1300, 1000, 420).scaled(0.3)
    results = []
    for edges in ("analytic", "soft"):
        poses = [torch.tensor(p, requires_grad=True) for p in ([0.15, -1.0, -3.1, -1.0, 1.5, 11.0],
                                                                [0.16, 0.5, 3.1, 0.6, 1.6, 14.0])]
        objects = []
        for k, pose in enumerate(poses):
            mesh = make_car(("sedan", "suv")[k], seed=k).mesh
            objects.append(MeshObject(torch.tensor(mesh.object_vertices(), dtype=torch.float32),
                                      torch.tensor(mesh.faces), rotation=kaggle_to_matrix(pose[:3]),
                                      translation=pose[3:], albedo=torch.tensor([0.6])))
        light = Lighting(torch.tensor(0.4, requires_grad=True), torch.tensor(0.6, requires_grad=True),
                         torch.tensor([0.2, -1.0, -0.5], requires_grad=True))
        out = render(Scene(objects), camera, light, edges=edges, sigma=1.5)
        weight = torch.linspace(0.0, 1.0, camera.width)
        loss = (out.image[0] * weight).sum() + (out.object_alpha * weight).sum() + out.alpha.square().sum()
        loss.backward()
        results += [out.image, out.alpha, out.object_alpha, out.depth, out.face_id, *(p.grad for p in poses),
                    light.ambient.grad, light.directional.grad, light.direction.grad]
    return [r.detach().clone() for r in results]


def test_kernels_same_bits_for_any_thread_count():
    import numba
    import torch

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here")
    saved = (torch.get_num_threads(), numba.get_num_threads())
    torch.set_num_threads(1)
    try:
        one, two, again = (_kernel_outputs(n) for n in (1, 2, 2))
    finally:
        torch.set_num_threads(saved[0])
        numba.set_num_threads(saved[1])
    assert (one[4] >= 0).sum() > 2000 and one[5].abs().sum() > 0     # covered pixels, gradients reach poses
    for a, b, c in zip(one, two, again, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """2 synthetic pictures at scale 0.25 with 1-2 cars each."""
    from nmrlight.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("determinism") / "data"
    synthesize(root, 2, seed=11, config=SynthConfig(scale=0.25, cars_mean=2.0, cars_max=2))
    return root


def _options(data: Path, out: Path, threads: int = 1, **kw) -> RunOptions:
    return RunOptions(data=data, predictions=data / "predictions.csv", out=out,
                      config=RefineConfig(threads=threads, **CONFIG), progress=False, **kw)


def assert_same(out: Path, reference: dict[str, str]) -> None:
    got = fingerprint(out)
    assert sorted(got) == sorted(reference)
    for name in reference:
        assert got[name] == reference[name], f"{name} differs from the in-process, one-thread run"


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[str, str]:
    """In process, one thread: the run everything else must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("determinism") / "reference"
    summary = run_refine(_options(data, out, workers=1), log=lambda _m: None)
    assert summary.exit_code == 0 and summary.cars >= 2
    prints = fingerprint(out)
    assert any(car["refined"] != car["initial"] for name, text in prints.items() if name.startswith("ID_")
               for car in json.loads(text)["cars"])  # something was refined
    return prints


def test_in_process_two_threads(data, reference, tmp_path):
    import numba
    import torch

    before = (torch.get_num_threads(), numba.get_num_threads())
    messages: list[str] = []
    run_refine(_options(data, tmp_path, threads=2, workers=1), log=messages.append)
    assert_same(tmp_path, reference)
    assert any("1 torch thread, 2 kernel thread(s)" in m for m in messages)
    assert (torch.get_num_threads(), numba.get_num_threads()) == before   # the caller's settings are back


def _driver_script(data: Path, out: Path, threads: int = 1, **options) -> str:
    """A separate driver process running `run_refine` (what `nmrlight refine` does) with CONFIG; it fails
    if a Ray the run started is still up when the run returns."""
    return textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from nmrlight.refine.config import RefineConfig
        from nmrlight.refine.runner import RunOptions, run_refine
        data = Path({str(data)!r})
        summary = run_refine(RunOptions(data=data, predictions=data / "predictions.csv", out=Path({str(out)!r}),
                             config=RefineConfig(threads={threads}, **{CONFIG!r}), progress=False, **{options!r}))
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            raise SystemExit("Ray is still initialised after the run")
        raise SystemExit(summary.exit_code)
    """)


def test_resume_after_kill(data, reference, tmp_path):
    """kill -9 a one-process run once its first image is saved; resume with two worker processes."""
    kill_after_first_result(_driver_script(data, tmp_path, workers=1), tmp_path, 180, env=_env())
    assert not (tmp_path / "refined.csv").exists()
    summary = run_refine(_options(data, tmp_path, workers=2), log=lambda _m: None)
    assert summary.resumed >= 1 and summary.refined_now >= 1
    assert_same(tmp_path, reference)


# --- a joined Ray cluster ------------------------------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                                                              "RAY_AUTH_TOKEN_PATH")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_session(sid: int) -> None:
    """SIGKILL every process of the session we started (the head, its GCS, raylet, workers), by id."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _run_driver(script: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc.pid)
        output, _ = proc.communicate()
        pytest.fail(f"driver timed out after {timeout} s:\n{output[-3000:]}")
    finally:
        _kill_session(proc.pid)   # a Ray it started and did not stop
    return subprocess.CompletedProcess(proc.args, proc.returncode, output)


@pytest.mark.skipif(sys.platform != "linux", reason="the loopback head is managed through /proc")
def test_joined_loopback_ray_head(data, reference, tmp_path):
    """`ray start --head` on 127.0.0.1 with a token on the machine (token authentication on, as after any
    local ray.init): joining it by address works without RAY_AUTH_MODE, and plain --ray (two workers of
    two kernel threads), while that cluster runs, starts a private instance for the run and shuts it down
    instead of failing; both reproduce the reference."""
    pytest.importorskip("ray")
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    ray_tmp = tempfile.mkdtemp(prefix="nmr-ray-", dir="/tmp")   # short: Ray's socket paths have a limit
    env = _env(HOME=str(home), RAY_TMPDIR=ray_tmp)
    port = _free_port()
    ray_cli = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
    head_log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(ray_cli + ["start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                       "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                                       "--block"],
                            stdout=head_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (tmp_path / "head.log").read_text():
            assert head.poll() is None, f"ray start failed:\n{(tmp_path / 'head.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "ray start --head did not come up in 120 s"
            time.sleep(0.5)
        # Ray with token authentication (2.60): the head requires the token found in HOME
        token_auth = importlib.util.find_spec("ray._private.authentication.authentication_token_setup") is not None
        if token_auth:
            assert "Token authentication is enabled" in (tmp_path / "head.log").read_text()

        joined = _run_driver(_driver_script(data, tmp_path / "joined", ray_address=f"127.0.0.1:{port}"), env)
        assert joined.returncode == 0, joined.stdout[-3000:]
        assert f"joined the Ray cluster at 127.0.0.1:{port}" + (", RAY_AUTH_MODE=token" if token_auth else "") \
            in joined.stdout
        assert_same(tmp_path / "joined", reference)

        local = _run_driver(_driver_script(data, tmp_path / "local", threads=2, ray=True, workers=2), env)
        assert local.returncode == 0, local.stdout[-3000:]
        assert "a local Ray started for the run" in local.stdout
        assert_same(tmp_path / "local", reference)
    finally:
        _kill_session(head.pid)
        head.wait()
        head_log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


# --- scale-bench's arithmetic ----------------------------------------------------------------------------
def test_scale_bench_projection_and_table():
    from nmrlight.commands.scale_bench import ScaleRow, markdown, projection

    def row(workers, cpu, cars=60):
        per_cpu_hour = cars / (cpu / 3600)
        return ScaleRow(workers, 1, workers, cpu / workers, 6, cars, 0.0, 0.0, 0.0, 0.0, cpu, per_cpu_hour,
                        cpu / cars, 1.0, 1.0)

    rows = [row(1, 60.0), row(2, 75.0)]      # 1 CPU-s a car, then 1.25 CPU-s a car: efficiency 0.8
    rows[1].cpu_efficiency = rows[1].cars_per_cpu_hour / rows[0].cars_per_cpu_hour
    text = projection(rows, cars=23000, cores=256)
    # 23,000 cars x 1 CPU-s / 0.8 / 256 cores = 112.3 s = 1.9 minutes; 6.4 CPU-hours at 1 CPU-s a car
    assert "1.9 minutes" in text and "x 3,600 x 0.80" in text and "6.4 CPU-hours" in text
    assert projection(rows[1:], 23000, 256) == "projection needs a 1x1 row"
    table = markdown(rows).splitlines()
    assert len(table) == 4 and table[2].startswith("| 1 x 1 | 6 | 60 |") and "| 1.25 | 2,880 | 0.80 |" in table[3]
