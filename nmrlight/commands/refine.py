"""`nmrlight refine`: refine every image of a predictions file, locally or on Ray, resumably.

Exit status: 0 when every image is refined, 3 when some image failed or a predictions row could
not be read (everything is still written: failed images and unreadable rows are passed through
unrefined in refined.csv and listed in the log, run.json and report.json), 2 for bad options or
inputs, 130 when interrupted (finished images are kept; run the same command again to resume).
"""

from __future__ import annotations

from pathlib import Path

import typer

from nmrlight.refine.config import LIGHTING_MODES, LOSS_TERMS, RefineConfig


def register(app: typer.Typer) -> None:
    @app.command()
    def refine(
        data: Path = typer.Argument(..., help="Data folder (images/, masks/, car_models_json/, camera/)."),
        predictions: Path = typer.Option(..., "--predictions", "-p", help=(
            "Predicted poses: train format (model id a car) or Kaggle submission format (none; meshes are "
            "then chosen by render-and-compare).")),
        fmt: str = typer.Option("auto", "--format", help=(
            "Predictions format: train, submission, or auto (decided from the whole file, and said).")),
        masks: Path | None = typer.Option(None, "--masks", help=(
            "A segmenter's COCO masks (dataset or results format), unordered: associated with the cars by "
            "overlap. Default: DATA/masks/<ImageId>.png label images.")),
        coco_images: Path | None = typer.Option(None, "--coco-images", help=(
            "COCO file whose 'images' list resolves the integer image_ids of a --masks results file.")),
        model: int | None = typer.Option(None, "--model", help="Use this mesh (model id) for every car."),
        mesh_candidates: int = typer.Option(RefineConfig.mesh_candidates, "--mesh-candidates", min=1, help=(
            "Cars without a model id: meshes refined per car; best final loss wins.")),
        mesh_screened: int = typer.Option(RefineConfig.mesh_screened, "--mesh-screened", min=0, help=(
            "Cars without a model id: meshes kept by the silhouette shortlist and ranked by a coarse "
            "refinement before the best --mesh-candidates are refined in full (<= candidates: no screen).")),
        mask_quality: str = typer.Option(RefineConfig.mask_quality, "--mask-quality", help=(
            "coarse: masks may be cut short at their box (a segmenter's); fine: exact outlines; auto: "
            "unordered --masks are coarse, label images fine.")),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder (created; re-use it to resume)."),
        workers: int | None = typer.Option(None, "--workers", "-w", min=1, help=(
            "Local worker processes (default: one a core; 1 refines in this process), spread over the "
            "visible GPUs with --device cuda; with --ray "
            "the most tasks in flight (default: all the cluster's CPUs / --cpus-per-task).")),
        ray: bool = typer.Option(False, "--ray", help="Run the images as Ray tasks (needs the 'ray' extra)."),
        ray_address: str | None = typer.Option(None, "--ray-address", help=(
            "Ray cluster to join, e.g. 'HEAD_IP:6379', 'auto' or 'ray://head:10001' (implies --ray); a token "
            "in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token is sent (RAY_AUTH_MODE=token) unless "
            "RAY_AUTH_MODE is set. Without it --ray starts a private local Ray for the run, even when another "
            "cluster runs here. DATA must be on a path every node can read.")),
        cpus_per_task: float = typer.Option(1.0, "--cpus-per-task", help="Ray: CPUs reserved per image task."),
        threads: int = typer.Option(1, "--threads", min=1, help=(
            "Compiled-kernel (numba) threads per worker; torch always uses one. Results are identical for "
            "any value, worker count or backend.")),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda (worker i uses cuda:i % GPUs)."),
        gif: bool = typer.Option(False, "--gif", help="Write an optimisation GIF per car to OUT/gifs/."),
        losses: str = typer.Option(RefineConfig.losses, "--losses", help=f"Loss terms: {', '.join(LOSS_TERMS)}."),
        lighting: str = typer.Option("learn", "--lighting", help=f"Lighting: {', '.join(LIGHTING_MODES)}."),
        edges: float = typer.Option(RefineConfig.weight_edges, "--edges", min=0.0, help=(
            "Weight of the photo-edge term along the rendered outline (0: off).")),
        images: str | None = typer.Option(None, "--images", help="Only these ImageIds, comma separated."),
        limit: int | None = typer.Option(None, "--limit", help="Only the first N images of the file."),
        submission: bool = typer.Option(False, "--submission", help=(
            "Also write OUT/submission.csv in the Kaggle upload format (always, for submission input).")),
        force: bool = typer.Option(False, "--force", help=(
            "OUT holds a run with other inputs: discard its image results and start over.")),
        retries: int = typer.Option(1, "--retries", min=0, help="Extra attempts for an image that fails."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        global_stage: bool = typer.Option(False, "--global-stage", help=(
            "Try the flipped heading per car besides the detector's (docs/accuracy.md).")),
        global_switch_min_iou: float = typer.Option(RefineConfig.global_switch_min_iou, "--global-switch-min-iou",
                                                    min=0.0, max=1.0, help=(
            "With --global-stage, a flipped heading is taken only when its refined IoU with the car's mask is "
            "at least this (0: any; docs/accuracy.md).")),
        global_min_visible: float = typer.Option(RefineConfig.global_min_visible, "--global-min-visible",
                                                 min=0.0, help=(
            "With --global-stage, a car whose mask covers less than this fraction of its rendered area at the "
            "detector's pose tries no flip (0: every car; docs/accuracy.md).")),
        global_prior_free: bool = typer.Option(RefineConfig.global_prior_free,
                                               "--global-prior-free/--no-global-prior-free", help=(
            "With --global-stage, a second start per car: refined without the pose prior, then with it, "
            "taken when its loss is lower (docs/accuracy.md).")),
        global_free_polish: float = typer.Option(RefineConfig.global_free_polish, "--global-free-polish", min=0.0,
                                                 help=(
            "With --global-stage, the chosen pose of a car at least this visible (mask over rendered area) is "
            "polished once more, the pose prior's pull removed (it keeps --global-free-polish-prior of its weight, "
            "centred on the chosen pose; 0: no polish; docs/accuracy.md).")),
        global_free_polish_prior: float = typer.Option(RefineConfig.global_free_polish_prior,
                                                       "--global-free-polish-prior", min=0.0, max=1.0, help=(
            "The share of the pose prior's weight the polish keeps, centred on the chosen pose: it holds the "
            "directions a partly hidden car's pixels leave flat (0: none; docs/accuracy.md).")),
        prior_sigma_far: float = typer.Option(RefineConfig.prior_sigma_far, "--prior-sigma-far", min=1.0, help=(
            "The pose prior's rotation standard deviations times this for cars 70 m and farther (linear from "
            "1 at 20 m) for cars at least half visible: a detector's rotation error grows with depth (1: off; "
            "docs/accuracy.md).")),
        prior_depth_outliers: float = typer.Option(RefineConfig.prior_depth_outliers, "--prior-depth-outliers",
                                                   min=0.0, max=0.5, help=(
            "The share of the detector's depths that are outliers, 3 x wider than the rest: the pose prior's "
            "depth term is then heavy-tailed, and holds a car the detector put 30 % off less (0: Gaussian; "
            "docs/accuracy.md).")),
        prior_depth_power: float = typer.Option(RefineConfig.prior_depth_scale_power, "--prior-depth-power",
                                                min=0.0, max=1.0, help=(
            "The prior grows as 1 / visible fraction for a partly hidden car; its depth term grows as that to "
            "this power (1: as the rotation's; docs/accuracy.md).")),
        global_stall_turns: bool = typer.Option(True, "--global-stall-turns/--no-global-stall-turns", help=(
            "With --global-stage, when a flip wins, the detector's heading turned by +-10 and +-20 deg is "
            "screened and the best refined: it takes the flip's place unless the flip fits better by the switch "
            "margin (docs/accuracy.md).")),
        global_depth_search: bool = typer.Option(True, "--global-depth-search/--no-global-depth-search", help=(
            "With --global-stage, a car whose chosen pose fits its mask poorly (IoU below 0.8 and at least 5 % "
            "visible, or below 0.95 when at least 70 % visible and nearer than 40 m) has the detector's depth "
            "x 0.85 and x 1.15 screened and the best refined (docs/accuracy.md).")),
        flip_review: bool = typer.Option(RefineConfig.appearance_review, "--flip-review/--no-flip-review", help=(
            "With --global-stage, once every photograph is refined: each car whose two headings, refined under "
            "the prior, ended within 0.03 of each other takes the other one when its mesh's face layout, learned "
            "from at least 8 of the run's well-fitted cars, fits it 20 % better, plus 5 x the loss by which its "
            "outline fits worse (docs/accuracy.md; on kaggle seeds not tuned on its switches were 6 right, "
            "2 wrong).")),
        global_flip_tie: bool = typer.Option(RefineConfig.global_flip_tie, "--global-flip-tie/--no-global-flip-tie",
                                             help=(
            "With --global-stage, when the prior-free second start wins for the detector's heading, a flip "
            "that tied it under the prior gets the same start (cars at least half visible; docs/accuracy.md).")),
        global_switch_margin_partial: float = typer.Option(
            RefineConfig.global_switch_margin_partial, "--global-switch-margin-partial", min=0.0, help=(
                "With --global-stage, the margin by which a flip must beat the detector's heading for a car less "
                "than half visible (0: the switch margin, 0.01; docs/accuracy.md).")),
        global_each_mesh: bool = typer.Option(RefineConfig.global_each_mesh, "--global-each-mesh", help=(
            "With --global-stage and cars without a model id: run the global stage for every candidate mesh, "
            "not only for the one their refinements from the detector's pose chose (1.6-1.8 x the CPU; "
            "docs/inputs.md).")),
        occluder_contradiction: float = typer.Option(RefineConfig.occluder_contradiction, "--occluder-contradiction",
                                                     min=0.0, max=1.0, help=(
            "A nearer car whose render covers more than this share of a car's mask is not rendered over it "
            "(its mask pixels are don't-care instead): its pose is contradicted there. 0: always rendered "
            "(docs/crowded.md).")),
        accept_iou_drop: float | None = typer.Option(None, "--accept-iou-drop", min=0.0, help=(
            "Keep the detector's pose when the refined IoU fell by more than this (docs/accuracy.md).")),
        accept_min_iou: float = typer.Option(RefineConfig.accept_min_iou, "--accept-min-iou", min=0.0, max=1.0,
                                             help=("Keep the detector's pose when the refined car's final IoU "
                                                   "with its own mask is below this (0: off; docs/crowded.md).")),
        accept_hidden_min_iou: float = typer.Option(RefineConfig.accept_hidden_min_iou, "--accept-hidden-min-iou",
                                                    min=0.0, max=1.0, help=(
            "Keep the detector's pose of a car less than "
            f"{100 * RefineConfig.accept_hidden_visible:g} % visible when its final IoU is below this (0: off; "
            "docs/crowded.md).")),
        accept_large_move: float = typer.Option(RefineConfig.accept_large_move, "--accept-large-move", min=0.0,
                                                help=("Keep the detector's pose when the car moved more than this "
                                                      "fraction of its depth and ended with an IoU below "
                                                      f"{RefineConfig.accept_large_move_iou:g} (0: off; "
                                                      "docs/crowded.md).")),
        accept_partial_share: float = typer.Option(RefineConfig.accept_partial_share, "--accept-partial-share",
                                                   min=0.0, max=1.0, help=(
            "A refinement these rules reject still moves the car this share of the way from the detector's pose "
            "toward it (0: the detector's pose kept; docs/crowded.md).")),
        rescore: bool = typer.Option(False, "--rescore", help=(
            "Confidence from the fit's evidence in refined.csv / submission.csv (docs/accuracy.md).")),
        shading_materials: bool = typer.Option(False, "--shading-materials", help=(
            "Grayscale term with one albedo a material class (body, glass, tyres; docs/lighting.md).")),
        ground_plane: bool = typer.Option(False, "--ground-plane", help=(
            "Fuse each car's depth with the road fitted to the photograph's other cars (docs/accuracy.md).")),
        joint_passes: int = typer.Option(RefineConfig.joint_passes, "--joint-passes", min=1, help=(
            "Passes over a photograph's cars; later ones see every neighbour refined (docs/crowded.md).")),
        optimizer: str = typer.Option(RefineConfig.optimizer, "--optimizer", help=(
            "Pose optimiser of each stage: auto (Levenberg-Marquardt on silhouette + edges, Adam with a "
            "grayscale term), lm, adam or lbfgs (docs/speed.md).")),
    ) -> None:
        """Refine every image of the predictions file: OUT/refined.csv, lighting.csv, report.json/html.

        Resumable: each image is saved to OUT/images/<ImageId>.json when done; re-run into the same OUT.

        Exit status 3 (after writing everything) when an image failed or a row was unreadable.
        """
        from nmrlight.errors import NmrlightError
        from nmrlight.refine.runner import RunOptions, run_refine

        if losses not in LOSS_TERMS:
            raise NmrlightError(f"--losses must be one of {', '.join(LOSS_TERMS)}, got {losses!r}")
        if lighting not in LIGHTING_MODES:
            raise NmrlightError(f"--lighting must be one of {', '.join(LIGHTING_MODES)}, got {lighting!r}")
        if device != "cpu" and not device.startswith("cuda"):
            raise NmrlightError(f"--device must be cpu or cuda, got {device!r}")
        from nmrlight.refine.optimisers import OPTIMIZERS

        if optimizer not in OPTIMIZERS:
            raise NmrlightError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if optimizer == "lm" and losses != "silhouette":
            raise NmrlightError(f"--optimizer lm takes --losses silhouette (its local model has no grayscale "
                                f"term), got --losses {losses}; use --optimizer auto or adam")
        if optimizer == "lm" and device != "cpu":
            raise NmrlightError(f"--optimizer lm runs on the CPU only, got --device {device}; use --optimizer auto "
                                "(Adam on CUDA) or adam")
        if mask_quality not in ("auto", "coarse", "fine"):
            raise NmrlightError(f"--mask-quality must be auto, coarse or fine, got {mask_quality!r}")
        from nmrlight.io.poses import FORMATS

        if fmt not in FORMATS:
            raise NmrlightError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        for option, path in (("--masks", masks), ("--coco-images", coco_images)):
            if path is not None and not path.is_file():
                raise NmrlightError(f"{option} {path}: file not found")
        if model is not None:
            from nmrlight.io.dataset import DataFolder

            DataFolder(data).car(model)  # an unknown id or a missing mesh fails here, clearly
        config = RefineConfig(losses=losses, lighting=lighting, device=device, weight_edges=edges, threads=threads,
                              gif_dir=str((out / "gifs").resolve()) if gif else None,
                              masks_file=str(masks.resolve()) if masks else None,
                              coco_images=str(coco_images.resolve()) if coco_images else None,
                              model=model, mesh_candidates=mesh_candidates, mesh_screened=mesh_screened,
                              global_stage=global_stage, global_switch_min_iou=global_switch_min_iou or None,
                              global_min_visible=global_min_visible or None, global_prior_free=global_prior_free,
                              global_free_polish=global_free_polish or None,
                              global_free_polish_prior=global_free_polish_prior,
                              prior_sigma_far=prior_sigma_far, prior_depth_outliers=prior_depth_outliers,
                              prior_depth_scale_power=prior_depth_power,
                              global_stall_turns_deg=RefineConfig.global_stall_turns_deg if global_stall_turns else (),
                              global_depth_search=RefineConfig.global_depth_search if global_depth_search else (),
                              global_flip_tie=global_flip_tie, appearance_review=flip_review,
                              global_switch_margin_partial=global_switch_margin_partial or None,
                              global_each_mesh=global_each_mesh,
                              accept_iou_drop=accept_iou_drop, accept_min_iou=accept_min_iou or None, rescore=rescore,
                              accept_large_move=accept_large_move or None, accept_partial_share=accept_partial_share,
                              accept_hidden_min_iou=accept_hidden_min_iou or None,
                              shading_materials=shading_materials,
                              ground_plane=ground_plane, occluder_contradiction=occluder_contradiction or None,
                              mask_quality=mask_quality, joint_passes=joint_passes, optimizer=optimizer)
        if gif:
            (out / "gifs").mkdir(parents=True, exist_ok=True)
        selected = [i.strip() for i in images.split(",") if i.strip()] if images is not None else None
        options = RunOptions(data=data, predictions=predictions, out=out, config=config, workers=workers,
                             ray=ray or ray_address is not None, ray_address=ray_address,
                             cpus_per_task=cpus_per_task, images=selected, limit=limit, submission=submission,
                             force=force, retries=retries, progress=not quiet, format=fmt)
        try:
            summary = run_refine(options)
        except KeyboardInterrupt:
            typer.echo(f"interrupted: finished images are kept in {out / 'images'}; run the same command "
                       "again to resume", err=True)
            raise typer.Exit(130) from None
        if summary.exit_code:
            raise typer.Exit(summary.exit_code)
