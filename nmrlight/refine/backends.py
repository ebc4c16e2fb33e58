"""Where images are refined: in this process, a pool of local processes, or Ray tasks.

Each backend takes `Job`s and hands back `(job, result dict or None, error or None)` as images
finish; the worker side (`refine_one`) never raises. Scheduling, queueing and transport are the
standard library's ProcessPoolExecutor (spawn context) or Ray's tasks; nothing home-made.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.result import CarResult, ImageResult

_WORKER: dict = {"device": None, "threads": None, "data": {}, "fn": {}}


def cpu_cores() -> int:
    """Cores this process may use (affinity / cgroup-pinned set when the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


TORCH_THREADS = 1  # torch's parallel reductions sum in an order that depends on the thread count


def configure_threads(threads: int) -> None:
    """One torch thread and `threads` numba threads in this process (refinement's deterministic set-up).

    The compiled kernels (z-buffer, covered pixels, edge crossings, soft silhouettes) give the same
    bits for any numba thread count: every output is written by one thread, in a fixed order. Torch's
    own CPU reductions do not (a sum over more than 32k elements is split by thread), so torch stays
    on one thread; the refinement windows are too small for intra-op threads to pay anyway.
    """
    threads = max(1, int(threads))
    import torch

    torch.set_num_threads(TORCH_THREADS)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass
    _WORKER["threads"] = threads


def current_threads() -> tuple[int, int | None]:
    """(torch threads, numba threads) of this process, to restore after an in-process run."""
    import torch

    try:
        import numba

        return torch.get_num_threads(), numba.get_num_threads()
    except ImportError:
        return torch.get_num_threads(), None


def restore_threads(saved: tuple[int, int | None]) -> None:
    import torch

    torch.set_num_threads(saved[0])
    if saved[1] is not None:
        import numba

        numba.set_num_threads(saved[1])
    _WORKER["threads"] = None


def _init_worker(threads: int, device: str, counter) -> None:
    """ProcessPoolExecutor initializer: threads, and the GPU of worker i (cuda:i % n_gpus)."""
    os.environ["OMP_NUM_THREADS"] = str(TORCH_THREADS)  # for libraries that read it later
    configure_threads(threads)
    if device.startswith("cuda") and ":" not in device:
        import torch

        with counter.get_lock():
            index = counter.value
            counter.value += 1
        device = f"cuda:{index % max(1, torch.cuda.device_count())}"
    _WORKER["device"] = device


def _resolve(spec: str) -> Callable:
    if spec not in _WORKER["fn"]:
        module, _, name = spec.partition(":")
        _WORKER["fn"][spec] = getattr(importlib.import_module(module), name)
    return _WORKER["fn"][spec]


def _data(root: str):
    from nmrlight.io.dataset import DataFolder

    if root not in _WORKER["data"]:
        _WORKER["data"][root] = DataFolder(root)
    return _WORKER["data"][root]


def failed_result(image_id: str, cars: list[CarPose], error: str, attempts: int, seconds: float = 0.0
                  ) -> ImageResult:
    """A failed image: its predicted cars passed through unchanged."""
    passed = [CarResult(index=k, initial=car, refined=car, status="image failed") for k, car in enumerate(cars)]
    return ImageResult(image_id, cars=passed, seconds=seconds, status="failed", error=error, attempts=attempts)


def refine_one(data_root: str, image_id: str, cars: list[CarPose], config: RefineConfig, refine_fn: str,
               attempt: int) -> dict:
    """Refine one image in this process and return its ImageResult as a dict; never raises."""
    start = time.perf_counter()
    # config.threads is what refine_image gives torch: one thread, whatever the worker's kernel threads
    config = dataclasses.replace(config, device=_WORKER["device"] or config.device, threads=TORCH_THREADS)
    try:
        result = _resolve(refine_fn)(_data(data_root), image_id, cars, config)
        if len(result.cars) != len(cars):
            raise RuntimeError(f"refinement returned {len(result.cars)} cars for {len(cars)}")
        result.attempts = attempt
        return result.to_dict()
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop the run
        error = str(exc) if isinstance(exc, NmrlightError) else \
            f"{type(exc).__name__}: {exc} [{_where(exc)}]"
        return failed_result(image_id, cars, error, attempt, time.perf_counter() - start).to_dict()


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def _ray_refine_one(data_root: str, image_id: str, cars: list[CarPose], config: RefineConfig, refine_fn: str,
                    attempt: int, threads: int) -> dict:
    """The Ray task: configure this worker once, then `refine_one`."""
    if _WORKER["threads"] != threads:
        configure_threads(threads)
    if config.device.startswith("cuda"):
        _WORKER["device"] = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to the GPU it gave this task
    return refine_one(data_root, image_id, cars, config, refine_fn, attempt)


# --- backends: in-process, process pool, Ray ----------------------------------------------------------
@dataclass
class Job:
    image_id: str
    cars: list[CarPose]
    attempt: int = 1


class _InProcess:
    """workers == 1: refine in this process (no start-up cost, easiest to debug)."""

    name = "in-process"

    def __init__(self, options, threads: int) -> None:
        self._saved_threads = current_threads()
        configure_threads(threads)
        self.detail = f"this process, 1 torch thread, {threads} kernel thread(s)"
        _WORKER["device"] = options.config.device
        self.capacity, self.workers = 1, 1
        self._args = (str(Path(options.data).resolve()), options.config, options.refine_fn)
        self._queue: deque[Job] = deque()

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def busy(self) -> int:
        return len(self._queue)

    def wait(self) -> list[tuple[Job, dict | None, str | None]]:
        job = self._queue.popleft()
        root, config, fn = self._args
        return [(job, refine_one(root, job.image_id, job.cars, config, fn, job.attempt), None)]

    def close(self) -> None:
        self._queue.clear()
        restore_threads(self._saved_threads)  # the caller's process gets its thread counts back


class _Pool:
    """N local worker processes (spawn: torch and fork do not mix); a broken pool is replaced."""

    name = "local-process"

    def __init__(self, options, workers: int, threads: int) -> None:
        import multiprocessing

        self._context = multiprocessing.get_context("spawn")
        self._counter = self._context.Value("i", 0)
        self._initargs = (threads, options.config.device, self._counter)
        self._args = (str(Path(options.data).resolve()), options.config, options.refine_fn)
        self.capacity = self.workers = workers
        self.detail = f"{workers} spawned processes, each 1 torch thread, {threads} kernel thread(s)"
        self._pool = None
        self._futures: dict = {}

    def _executor(self):
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self._context,
                                             initializer=_init_worker, initargs=self._initargs)
        return self._pool

    def submit(self, job: Job) -> None:
        root, config, fn = self._args
        future = self._executor().submit(refine_one, root, job.image_id, job.cars, config, fn, job.attempt)
        self._futures[future] = job

    def busy(self) -> int:
        return len(self._futures)

    def wait(self) -> list[tuple[Job, dict | None, str | None]]:
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as wait_futures
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait_futures(list(self._futures), return_when=FIRST_COMPLETED)
        finished, broken = [], False
        for future in done:
            job = self._futures.pop(future)
            try:
                finished.append((job, future.result(), None))
            except BrokenProcessPool as exc:
                broken = True
                finished.append((job, None, f"worker process died ({exc or 'BrokenProcessPool'})"))
            except Exception as exc:  # noqa: BLE001 - e.g. a result that failed to pickle
                finished.append((job, None, f"{type(exc).__name__}: {exc}"))
        if broken:  # every other in-flight future of a broken pool is lost too
            for job in self._futures.values():
                finished.append((job, None, "worker process died (BrokenProcessPool)"))
            self._futures.clear()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        return finished

    def close(self) -> None:
        if self._pool is not None:  # wait (reap the workers) unless images are still in flight
            self._pool.shutdown(wait=not self._futures, cancel_futures=True)
            self._pool = None
        self._futures.clear()


AUTH_MODE_ENV = "RAY_AUTH_MODE"


def _enable_ray_token_auth() -> str | None:
    """Joining an address: use token authentication when the user has a Ray token and has not chosen a mode.

    Ray 2.60 heads started with `ray start --head` require a token whenever one exists on that
    machine (~/.ray/auth_token, made by any earlier local `ray.init()`), but a driver given an explicit
    address only sends it with RAY_AUTH_MODE=token. Ray does this same check itself for address
    "auto"; we do it for every address. A token sent to a cluster without authentication is ignored.
    Returns what was decided, for the log.
    """
    if os.environ.get(AUTH_MODE_ENV) is not None:
        return f"{AUTH_MODE_ENV}={os.environ[AUTH_MODE_ENV]} (as set)"
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # a Ray without token authentication
        return None
    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        return None
    _enable_token_auth()  # sets RAY_AUTH_MODE=token for this process and its children, reloads Ray's config
    return f"{AUTH_MODE_ENV}=token (the token of RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"


def _connect(ray, options) -> str:
    """ray.init for the run: join options.ray_address, or start a private local instance."""
    try:
        if options.ray_address:
            auth = _enable_ray_token_auth()
            ray.init(address=options.ray_address, logging_level=logging.WARNING)
            return f"joined the Ray cluster at {options.ray_address}" + (f", {auth}" if auth else "")
        # address="local": a new instance even when RAY_ADDRESS is set or a `ray start` cluster runs here
        cpus = options.workers or cpu_cores()
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
        return f"a local Ray started for the run ({cpus} CPUs)"
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:  # RayError: refused token
        where = options.ray_address or "a new local instance"
        hint = ""
        if options.ray_address:
            hint = (" (a cluster with token authentication needs its token here: RAY_AUTH_TOKEN=<token>, "
                    "RAY_AUTH_TOKEN_PATH=<file> or ~/.ray/auth_token; `ray get-auth-token` on the head prints it)")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NmrlightError(f"--ray: cannot start or reach Ray at {where}: {first}{hint}") from None


class _Ray:
    """Ray tasks on an existing cluster (address) or on a local one started for the run."""

    name = "ray-task"

    def __init__(self, options) -> None:
        try:
            import ray
        except ImportError:
            raise NmrlightError("--ray needs Ray, which is not installed: pip install 'nmrlight[ray]' "
                                "(or pip install 'ray[default]')") from None
        self.ray = ray
        if options.cpus_per_task <= 0:
            raise NmrlightError(f"--cpus-per-task must be positive, got {options.cpus_per_task}")
        self._started = not ray.is_initialized()
        self.detail = "the Ray this process had already joined"
        if self._started:
            self.detail = _connect(ray, options)
        cuda = options.config.device.startswith("cuda")
        self._remote = ray.remote(_ray_refine_one).options(
            num_cpus=options.cpus_per_task, num_gpus=1 if cuda else 0, max_retries=0)
        resources = ray.cluster_resources()
        slots = resources.get("GPU", 0) if cuda else resources.get("CPU", 1) / options.cpus_per_task
        if cuda and slots < 1:
            raise NmrlightError("--ray --device cuda: the Ray cluster has no GPUs")
        self.workers = self.capacity = options.workers or max(1, int(slots))
        self._threads = max(1, int(options.config.threads or 1))   # numba threads a task (torch: one)
        self._args = (str(Path(options.data).resolve()), options.config, options.refine_fn)
        self._refs: dict = {}

    def submit(self, job: Job) -> None:
        root, config, fn = self._args
        ref = self._remote.remote(root, job.image_id, job.cars, config, fn, job.attempt, self._threads)
        self._refs[ref] = job

    def busy(self) -> int:
        return len(self._refs)

    def wait(self) -> list[tuple[Job, dict | None, str | None]]:
        ray = self.ray
        ready, _ = ray.wait(list(self._refs), num_returns=1)
        more, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        finished = []
        for ref in dict.fromkeys(ready + more):
            job = self._refs.pop(ref)
            try:
                finished.append((job, ray.get(ref), None))
            except ray.exceptions.RayError as exc:  # worker or node died, task lost
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                finished.append((job, None, f"Ray task lost ({type(exc).__name__}: {first})"))
        return finished

    def close(self) -> None:
        for ref in self._refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self._refs.clear()
        if self._started:
            self.ray.shutdown()


def make_backend(options):
    if options.workers is not None and options.workers < 1:
        raise NmrlightError(f"--workers must be at least 1, got {options.workers}")
    gpus = 0
    ray = options.ray or bool(options.ray_address)   # an address implies Ray
    if options.config.device.startswith("cuda") and not ray:
        import torch

        if not torch.cuda.is_available():
            raise NmrlightError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
        gpus = torch.cuda.device_count()
    if ray:
        return _Ray(options)
    # default: one worker a GPU, else one a core (processes beat threads here, docs/scaling.md), and one
    # kernel thread a worker, also in process: results are the same bits for any choice (configure_threads)
    workers = options.workers or gpus or cpu_cores()
    threads = max(1, int(options.config.threads or 1))
    if workers == 1:
        return _InProcess(options, threads)
    return _Pool(options, workers, threads)
