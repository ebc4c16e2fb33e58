"""Refine a whole data set: shard images over local processes or Ray tasks, resumably and loss-free.

The unit of work is one image (`refine_image` -> `ImageResult`). The driver (this process) keeps at
most `capacity` images in flight, writes each finished image atomically to OUT/images/<ImageId>.json
as soon as it comes back, retries a failing image `retries` times, records it as failed after that
(its predictions passed through), and finally merges everything, in input order, into
OUT/refined.csv and the reports. A re-run into the same OUT skips images already "ok", so a killed
run loses only the images that were in flight. Scheduling, queueing and transport are the
standard library's ProcessPoolExecutor (spawn context) or Ray's tasks; nothing home-made.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose, read_poses_lenient, write_submission
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.result import CarResult, ImageResult

DEFAULT_REFINE_FN = "nmrlight.refine.image:refine_image"
RUN_FILE = "run.json"
IMAGES_DIR = "images"
# Config fields that do not change what is computed: a run may resume with other values.
_NON_RESULT_FIELDS = ("device", "threads", "gif_dir")

Log = Callable[[str], None]


# --- options and outcome ----------------------------------------------------------------------------
@dataclass
class RunOptions:
    """What to refine and how to spread it (see `nmrlight refine --help`)."""

    data: Path
    predictions: Path
    out: Path
    config: RefineConfig = field(default_factory=RefineConfig)
    workers: int | None = None        # local processes (default: one a core); Ray: max tasks in flight
    ray: bool = False
    ray_address: str | None = None    # None: start a local Ray for the run
    cpus_per_task: float = 1.0        # Ray: CPUs reserved (and torch threads used) per image task
    images: list[str] | None = None   # only these ImageIds (input order kept)
    limit: int | None = None          # only the first N images
    submission: bool = False          # also write OUT/submission.csv (Kaggle upload format)
    force: bool = False               # start over in an OUT made with other inputs
    retries: int = 1                  # extra attempts for a failing image
    progress: bool = True
    refine_fn: str = DEFAULT_REFINE_FN  # "module:function" with refine_image's signature


@dataclass
class RunSummary:
    """What a run did. `exit_code` is 0 when every image is ok and every row was readable, else 3."""

    out: Path
    images: int = 0                   # images of the run (selected, readable rows)
    ok: int = 0
    failed: dict[str, str] = field(default_factory=dict)    # ImageId -> error
    resumed: int = 0                  # already done by an earlier run
    refined_now: int = 0              # done by this run
    bad_rows: dict[str, str] = field(default_factory=dict)  # ImageId / <line N> -> parse error
    cars: int = 0                     # cars of all images of the run
    cars_now: int = 0                 # cars of the images done by this run
    seconds: float = 0.0
    workers: int = 1
    backend: str = "in-process"     # in-process, local-process, ray-task (none: nothing left to do)

    @property
    def exit_code(self) -> int:
        return 3 if self.failed or self.bad_rows else 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        d["exit_code"] = self.exit_code
        return d


# --- input -------------------------------------------------------------------------------------------
@dataclass
class _Inputs:
    order: list[str]                              # every ImageId of the file, first occurrence order
    poses: dict[str, list[CarPose]]               # readable rows
    errors: dict[str, str]                        # unreadable rows
    raw: dict[str, tuple[str, str | None]]        # ImageId -> (PredictionString, Confidence) as written


def _read_inputs(path: Path, submission: bool = False) -> _Inputs:
    """The predictions file: parsed rows, the errors of bad rows, and each row's raw text (pass-through)."""
    poses, errors = read_poses_lenient(path, submission=submission)
    order: list[str] = []
    raw: dict[str, tuple[str, str | None]] = {}
    with Path(path).open(newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
        i_id, i_pred = header.index("ImageId"), header.index("PredictionString")
        i_conf = header.index("Confidence") if "Confidence" in header else None
        for row in reader:
            image_id = row[i_id].strip() if i_id < len(row) else ""
            if not image_id or image_id in raw:
                continue
            order.append(image_id)
            raw[image_id] = (row[i_pred] if i_pred < len(row) else "",
                             row[i_conf] if i_conf is not None and i_conf < len(row) else None)
    return _Inputs(order, poses, errors, raw)


def _select(order: list[str], images: list[str] | None, limit: int | None) -> list[str]:
    if images is not None and limit is not None:
        raise NmrlightError("give --images or --limit, not both")
    if images is not None:
        known = set(order)
        missing = [i for i in images if i not in known]
        if missing:
            raise NmrlightError(f"--images: not in the predictions file: {', '.join(missing[:5])}"
                                f"{' ...' if len(missing) > 5 else ''}")
        wanted = set(images)
        return [i for i in order if i in wanted]
    if limit is not None:
        if limit < 1:
            raise NmrlightError(f"--limit must be at least 1, got {limit}")
        return order[:limit]
    return list(order)


# --- OUT folder: run.json, per-image results -------------------------------------------------------
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


def _write_atomic(path: Path, text: str) -> None:
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
    _write_atomic(result_path(out, result.image_id), json.dumps(result.to_dict(), indent=1) + "\n")


def load_result(out: Path, image_id: str) -> ImageResult | None:
    """The stored result of `image_id`, None when missing or unreadable."""
    path = result_path(out, image_id)
    try:
        return ImageResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _prepare_out(options: RunOptions, log: Log) -> None:
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
    _write_atomic(run_file, json.dumps(record, indent=1) + "\n")


def _version() -> str:
    from nmrlight import __version__

    return __version__


# --- the work of one image (runs in a worker process or a Ray task) ---------------------------------
_WORKER: dict = {"device": None, "threads": None, "data": {}, "fn": {}}


def cpu_cores() -> int:
    """Cores this process may use (affinity / cgroup-pinned set when the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def configure_threads(threads: int) -> None:
    """Use `threads` torch and numba threads in this process, so N workers do not oversubscribe cores."""
    threads = max(1, int(threads))
    import torch

    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass
    _WORKER["threads"] = threads


def _init_worker(threads: int, device: str, counter) -> None:
    """ProcessPoolExecutor initializer: threads, and the GPU of worker i (cuda:i % n_gpus)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for libraries that read it later
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
    config = dataclasses.replace(config, device=_WORKER["device"] or config.device,
                                 threads=_WORKER["threads"] or config.threads)
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
class _Job:
    image_id: str
    cars: list[CarPose]
    attempt: int = 1


class _InProcess:
    """workers == 1: refine in this process (no start-up cost, easiest to debug)."""

    name = "in-process"

    def __init__(self, options: RunOptions, threads: int) -> None:
        configure_threads(threads)
        _WORKER["device"] = options.config.device
        self.capacity, self.workers = 1, 1
        self._args = (str(Path(options.data).resolve()), options.config, options.refine_fn)
        self._queue: deque[_Job] = deque()

    def submit(self, job: _Job) -> None:
        self._queue.append(job)

    def busy(self) -> int:
        return len(self._queue)

    def wait(self) -> list[tuple[_Job, dict | None, str | None]]:
        job = self._queue.popleft()
        root, config, fn = self._args
        return [(job, refine_one(root, job.image_id, job.cars, config, fn, job.attempt), None)]

    def close(self) -> None:
        self._queue.clear()


class _Pool:
    """N local worker processes (spawn: torch and fork do not mix); a broken pool is replaced."""

    name = "local-process"

    def __init__(self, options: RunOptions, workers: int, threads: int) -> None:
        import multiprocessing

        self._context = multiprocessing.get_context("spawn")
        self._counter = self._context.Value("i", 0)
        self._initargs = (threads, options.config.device, self._counter)
        self._args = (str(Path(options.data).resolve()), options.config, options.refine_fn)
        self.capacity = self.workers = workers
        self._pool = None
        self._futures: dict = {}

    def _executor(self):
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self._context,
                                             initializer=_init_worker, initargs=self._initargs)
        return self._pool

    def submit(self, job: _Job) -> None:
        root, config, fn = self._args
        future = self._executor().submit(refine_one, root, job.image_id, job.cars, config, fn, job.attempt)
        self._futures[future] = job

    def busy(self) -> int:
        return len(self._futures)

    def wait(self) -> list[tuple[_Job, dict | None, str | None]]:
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


class _Ray:
    """Ray tasks on an existing cluster (address) or on a local one started for the run."""

    name = "ray-task"

    def __init__(self, options: RunOptions) -> None:
        try:
            import ray
        except ImportError:
            raise NmrlightError("--ray needs Ray, which is not installed: pip install 'nmrlight[ray]' "
                                "(or pip install 'ray[default]')") from None
        self.ray = ray
        if options.cpus_per_task <= 0:
            raise NmrlightError(f"--cpus-per-task must be positive, got {options.cpus_per_task}")
        self._started = not ray.is_initialized()
        if self._started:
            try:
                if options.ray_address:
                    ray.init(address=options.ray_address, logging_level=logging.WARNING)
                else:
                    ray.init(num_cpus=options.workers or cpu_cores(), include_dashboard=False,
                             logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = options.ray_address or "a new local instance"
                raise NmrlightError(f"--ray: cannot start or reach Ray at {where}: {exc}") from None
        cuda = options.config.device.startswith("cuda")
        self._remote = ray.remote(_ray_refine_one).options(
            num_cpus=options.cpus_per_task, num_gpus=1 if cuda else 0, max_retries=0)
        resources = ray.cluster_resources()
        slots = resources.get("GPU", 0) if cuda else resources.get("CPU", 1) / options.cpus_per_task
        if cuda and slots < 1:
            raise NmrlightError("--ray --device cuda: the Ray cluster has no GPUs")
        self.workers = self.capacity = options.workers or max(1, int(slots))
        self._threads = max(1, int(options.cpus_per_task))
        self._args = (str(Path(options.data).resolve()), options.config, options.refine_fn)
        self._refs: dict = {}

    def submit(self, job: _Job) -> None:
        root, config, fn = self._args
        ref = self._remote.remote(root, job.image_id, job.cars, config, fn, job.attempt, self._threads)
        self._refs[ref] = job

    def busy(self) -> int:
        return len(self._refs)

    def wait(self) -> list[tuple[_Job, dict | None, str | None]]:
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


def _backend(options: RunOptions):
    if options.workers is not None and options.workers < 1:
        raise NmrlightError(f"--workers must be at least 1, got {options.workers}")
    gpus = 0
    if options.config.device.startswith("cuda") and not options.ray:
        import torch

        if not torch.cuda.is_available():
            raise NmrlightError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
        gpus = torch.cuda.device_count()
    if options.ray:
        return _Ray(options)
    # default: one worker a GPU, else one a core (processes beat threads here, docs/scaling.md)
    workers = options.workers or gpus or cpu_cores()
    threads = options.config.threads or max(1, cpu_cores() // workers)
    if workers == 1:
        return _InProcess(options, threads)
    return _Pool(options, workers, threads)


# --- output ----------------------------------------------------------------------------------------------
def _num(value: float) -> str:
    return repr(float(value))


def _format_cars(cars: Iterable[CarPose]) -> tuple[str, str]:
    cars = list(cars)
    prediction = " ".join(" ".join([str(int(c.model_type))] + [_num(v) for v in (*c.rotation, *c.translation)])
                          for c in cars)
    return prediction, " ".join(_num(c.confidence) for c in cars)


def write_refined(path: Path, order: list[str], results: dict[str, ImageResult],
                  raw: dict[str, tuple[str, str | None]]) -> None:
    """refined.csv in the train format: one row per input image in input order; rows that could not be
    read are copied as written."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["ImageId", "PredictionString", "Confidence"])
    for image_id in order:
        if image_id in results:
            writer.writerow([image_id, *_format_cars(results[image_id].refined_poses())])
        else:
            prediction, confidence = raw[image_id]
            writer.writerow([image_id, prediction, confidence or ""])
    _write_atomic(Path(path), buffer.getvalue())


# --- the run ------------------------------------------------------------------------------------------------
def run_refine(options: RunOptions, log: Log | None = None) -> RunSummary:
    """Refine every selected image of `options.predictions`; write OUT/images/*.json, refined.csv, reports.

    Resumes from OUT/images (status ok is kept, failed is retried). Raises NmrlightError for bad
    options or inputs; an image that fails is recorded, never raised. KeyboardInterrupt propagates
    after the pool is shut down (finished images are already on disk).
    """
    start = time.perf_counter()
    out = Path(options.out)
    log_file = None

    def emit(message: str) -> None:
        if log_file is not None:
            log_file.write(message + "\n")
            log_file.flush()
        (log or _default_log)(message)

    if not Path(options.predictions).is_file():
        raise NmrlightError(f"predictions file {options.predictions}: file not found")
    from nmrlight.io.dataset import DataFolder

    data = DataFolder(options.data)
    data.images_dir  # noqa: B018 - fail early and clearly without an images folder
    inputs = _read_inputs(Path(options.predictions))
    selected = _select(inputs.order, options.images, options.limit)
    summary = RunSummary(out=out)
    selected_set = set(selected)
    everything = options.images is None and options.limit is None
    summary.bad_rows = {k: m for k, m in inputs.errors.items() if everything or k in selected_set}
    run_ids = [i for i in selected if i in inputs.poses]
    predictions = {i: inputs.poses[i] for i in run_ids}

    _prepare_out(options, emit)
    log_file = (out / "run.log").open("a")
    try:
        for message in summary.bad_rows.values():
            emit(f"skipped unreadable row (passed through as written): {message}")
        results: dict[str, ImageResult] = {}
        for image_id in run_ids:
            previous = load_result(out, image_id)
            if previous is not None and previous.status == "ok" and len(previous.cars) == len(predictions[image_id]):
                results[image_id] = previous
        summary.resumed = len(results)
        todo = [i for i in run_ids if i not in results]
        summary.images = len(run_ids)
        summary.cars = sum(len(c) for c in predictions.values())
        backend = _backend(options) if todo else None
        summary.workers = backend.workers if backend else 0
        summary.backend = backend.name if backend else "none"
        emit(f"refine: {len(run_ids)} images, {summary.cars} cars; {summary.resumed} already done in {out}, "
             f"{len(todo)} to do" + (f" on {backend.workers} worker(s) ({backend.name})" if backend else ""))
        if backend is not None:
            try:
                _drive(backend, todo, predictions, options, out, results, summary, emit)
            finally:
                backend.close()
        ordered = [results[i] for i in run_ids]
        summary.ok = sum(r.status == "ok" for r in ordered)
        summary.failed = {r.image_id: r.error or "failed" for r in ordered if r.status != "ok"}
        write_refined(out / "refined.csv", selected, results, inputs.raw)
        if options.submission:
            write_submission(out / "submission.csv",
                             {i: (results[i].refined_poses() if i in results else []) for i in selected})
        _reports(out, ordered, data, predictions, emit)
        summary.seconds = time.perf_counter() - start
        record = json.loads((out / RUN_FILE).read_text())
        record["summary"] = summary.to_dict()
        _write_atomic(out / RUN_FILE, json.dumps(record, indent=1) + "\n")
        for line in summary_lines(summary):
            emit(line)
    finally:
        if log_file is not None:
            log_file.close()
    return summary


def _drive(backend, todo: list[str], predictions: dict[str, list[CarPose]], options: RunOptions, out: Path,
           results: dict[str, ImageResult], summary: RunSummary, emit: Log) -> None:
    """Keep the backend full, save each result as it arrives, retry failures, show progress."""
    from tqdm import tqdm

    pending = deque(_Job(i, predictions[i]) for i in todo)
    bar = tqdm(total=len(todo), unit="img", disable=not options.progress, file=sys.stderr, dynamic_ncols=True,
               desc="refining", smoothing=0.1)
    t0 = time.perf_counter()
    failures = 0
    try:
        while pending or backend.busy():
            while pending and backend.busy() < backend.capacity:
                backend.submit(pending.popleft())
            for job, payload, lost in backend.wait():
                if payload is not None:
                    result = ImageResult.from_dict(payload)
                else:
                    result = failed_result(job.image_id, job.cars, lost or "lost", job.attempt)
                if result.status != "ok" and job.attempt <= options.retries:
                    _write_status(emit, bar, f"image {job.image_id}: attempt {job.attempt} failed "
                                  f"({result.error}); retrying")
                    pending.append(_Job(job.image_id, job.cars, job.attempt + 1))
                    continue
                result.attempts = job.attempt
                save_result(out, result)
                results[job.image_id] = result
                summary.refined_now += 1
                summary.cars_now += len(job.cars)
                if result.status != "ok":
                    failures += 1
                    _write_status(emit, bar, f"image {job.image_id}: FAILED after {job.attempt} attempts: "
                                  f"{result.error}")
                elapsed = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"{summary.cars_now / elapsed:.2f} cars/s, {failures} failed", refresh=False)
                bar.update(1)
    finally:
        bar.close()


def _reports(out: Path, results: list[ImageResult], data, predictions: dict[str, list[CarPose]], emit: Log
             ) -> None:
    try:
        from nmrlight.refine.report import write_reports
    except ModuleNotFoundError as exc:  # the report module is built separately
        if exc.name != "nmrlight.refine.report":
            raise
        emit("reports not written: nmrlight.refine.report is not available")
        return
    write_reports(out, results, data, predictions)


def _write_status(emit: Log, bar, message: str) -> None:
    with bar.external_write_mode():
        emit(message)


def _default_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary_lines(summary: RunSummary) -> list[str]:
    """The end-of-run summary, one line each."""
    rate = summary.cars_now / summary.seconds if summary.seconds > 0 else 0.0
    lines = [f"done in {summary.seconds:.1f} s: {summary.images} images ({summary.ok} ok, {len(summary.failed)} "
             f"failed, {summary.resumed} resumed from an earlier run), {summary.cars} cars; this run refined "
             f"{summary.refined_now} images / {summary.cars_now} cars ({rate:.2f} cars/s) on "
             f"{summary.workers} worker(s) ({summary.backend})"]
    if summary.bad_rows:
        lines.append(f"{len(summary.bad_rows)} unreadable prediction rows were passed through unrefined")
    for image_id, error in list(summary.failed.items())[:10]:
        lines.append(f"  failed {image_id}: {error}")
    if len(summary.failed) > 10:
        lines.append(f"  ... and {len(summary.failed) - 10} more (see {summary.out / 'report.json'})")
    lines.append(f"wrote {summary.out / 'refined.csv'}")
    return lines
