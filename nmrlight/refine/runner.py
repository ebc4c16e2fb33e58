"""Refine a whole data set: shard images over local processes or Ray tasks, resumably and loss-free.

The unit of work is one image (`refine_image` -> `ImageResult`). The driver (this module) keeps at
most `capacity` images in flight on a backend (`backends`: in process, local processes, Ray), writes
each finished image atomically to OUT/images/<ImageId>.json as soon as it comes back (`outdir`),
retries a failing image `retries` times, records it as failed after that (its predictions passed
through), and finally merges everything, in input order, into OUT/refined.csv (`merge`) and the
reports. A re-run into the same OUT skips images already "ok", so a killed run loses only the images
that were in flight.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose, write_submission
from nmrlight.refine.backends import Job, cpu_cores, failed_result, make_backend
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.inputs import check_masks, fallback_model, read_inputs, select_images
from nmrlight.refine.merge import write_refined
from nmrlight.refine.outdir import RUN_FILE, Log, load_result, prepare_out, result_path, save_result, write_atomic
from nmrlight.refine.result import ImageResult

__all__ = ["RunOptions", "RunSummary", "run_refine", "summary_lines", "load_result", "result_path", "save_result",
           "cpu_cores", "DEFAULT_REFINE_FN"]

DEFAULT_REFINE_FN = "nmrlight.refine.image:refine_image"


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
    cpus_per_task: float = 1.0        # Ray: CPUs reserved per image task (threads: config.threads)
    images: list[str] | None = None   # only these ImageIds (input order kept)
    limit: int | None = None          # only the first N images
    submission: bool = False          # also write OUT/submission.csv (Kaggle upload format)
    force: bool = False               # start over in an OUT made with other inputs
    retries: int = 1                  # extra attempts for a failing image
    progress: bool = True
    refine_fn: str = DEFAULT_REFINE_FN  # "module:function" with refine_image's signature
    format: str = "train"             # predictions: train, submission or auto (docs/inputs.md)


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
    inputs = read_inputs(Path(options.predictions), fmt=options.format)
    selected = select_images(inputs.order, options.images, options.limit)
    summary = RunSummary(out=out)
    selected_set = set(selected)
    everything = options.images is None and options.limit is None
    summary.bad_rows = {k: m for k, m in inputs.errors.items() if everything or k in selected_set}
    run_ids = [i for i in selected if i in inputs.poses]
    predictions = {i: inputs.poses[i] for i in run_ids}

    masks_lines = check_masks(options.config, run_ids)  # a bad masks file fails before OUT is touched
    prepare_out(options, emit)
    log_file = (out / "run.log").open("a")
    try:
        emit(f"predictions {options.predictions}: {inputs.format} format ({inputs.format_reason})")
        for message in masks_lines:
            emit(message)
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
        backend = make_backend(options) if todo else None
        summary.workers = backend.workers if backend else 0
        summary.backend = backend.name if backend else "none"
        emit(f"refine: {len(run_ids)} images, {summary.cars} cars; {summary.resumed} already done in {out}, "
             f"{len(todo)} to do" + (f" on {backend.workers} worker(s) ({backend.name}: {backend.detail})"
                                 if backend else ""))
        if backend is not None:
            try:
                _drive(backend, todo, predictions, options, out, results, summary, emit)
            finally:
                backend.close()
        if options.config.appearance_review:
            _review_flips(data, results, options.config, out, emit)
        for line in failed_car_lines(results.values()):
            emit(line)
        ordered = [results[i] for i in run_ids]
        summary.ok = sum(r.status == "ok" for r in ordered)
        summary.failed = {r.image_id: r.error or "failed" for r in ordered if r.status != "ok"}
        write_refined(out / "refined.csv", selected, results, inputs.raw, fallback_model(data, options.config))
        if options.submission or inputs.format == "submission":
            write_submission(out / "submission.csv",
                             {i: (results[i].refined_poses() if i in results else []) for i in selected})
        _reports(out, ordered, data, predictions, min(options.workers or cpu_cores(), cpu_cores()))
        summary.seconds = time.perf_counter() - start
        record = json.loads((out / RUN_FILE).read_text())
        record["summary"] = summary.to_dict()
        write_atomic(out / RUN_FILE, json.dumps(record, indent=1) + "\n")
        for line in summary_lines(summary):
            emit(line)
    finally:
        if log_file is not None:
            log_file.close()
    return summary


def failed_car_lines(results, most: int = 5) -> list[str]:
    """Log lines for the cars whose refinement raised (status "failed": each kept the detector's pose
    while its photograph's other cars were refined), the first `most` named with their error."""
    failed = [(r.image_id, c.index, c.extra.get("error", "")) for r in results for c in r.cars if c.status == "failed"]
    if not failed:
        return []
    lines = [f"{len(failed)} car(s) could not be refined and kept the detector's pose (report.json: status "
             f"\"failed\", extra.error):"]
    lines += [f"  {image_id} car {index}: {error}" for image_id, index, error in failed[:most]]
    if len(failed) > most:
        lines.append(f"  ... and {len(failed) - most} more")
    return lines


def _review_flips(data, results: dict[str, ImageResult], config: RefineConfig, out: Path, emit: Log) -> None:
    """The flip ties of the whole run judged by the meshes' learned layouts (refine/appearance.py); the
    results it judged are saved again, so that a resumed run does not judge them twice."""
    from nmrlight.refine.appearance import review_flip_ties

    judged_before = {i: sum("appearance" in c.extra for c in r.cars) for i, r in results.items()}
    review = review_flip_ties([(data, r) for r in results.values()], config, emit)
    for image_id, result in results.items():
        if sum("appearance" in c.extra for c in result.cars) != judged_before[image_id]:
            save_result(out, result)
    if review.ties:
        enough = sum(n >= config.appearance_min_voters for n in review.learned.values())
        emit(f"flip review: {review.ties} tied cars, {review.judged} judged by the layouts of {len(review.learned)} "
             f"meshes ({enough} with the {config.appearance_min_voters} voters a judgment needs), "
             f"{review.switched} switched to their other heading")


def _drive(backend, todo: list[str], predictions: dict[str, list[CarPose]], options: RunOptions, out: Path,
           results: dict[str, ImageResult], summary: RunSummary, emit: Log) -> None:
    """Keep the backend full, save each result as it arrives, retry failures, show progress."""
    from tqdm import tqdm

    pending = deque(Job(i, predictions[i]) for i in todo)
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
                    pending.append(Job(job.image_id, job.cars, job.attempt + 1))
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


def _reports(out: Path, results: list[ImageResult], data, predictions: dict[str, list[CarPose]], workers: int
             ) -> None:
    """lighting.csv, report.json and the HTML report, drawn on up to `workers` local processes."""
    from nmrlight.refine.report import write_reports

    write_reports(out, results, data, predictions, workers=workers)


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
