"""The predict command's loop: every case in the input folder becomes a mask, or one clear error.

Exit codes: 0 every case written (or already there); 1 at least one case failed; 2 the run could
not start (bad arguments, weights or output folder); 3 no cases in the input folder.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

from app.config import PredictConfig
from app.inference import io
from app.inference.report import CaseReport, append_log, organ_volumes_ml, summary_table
from app.inference.stages import StageTimer, process_start_perf
from app.inference.validate import check_image

EXIT_OK, EXIT_CASE_FAILED, EXIT_CANNOT_START, EXIT_NO_CASES = 0, 1, 2, 3


def select_shard(cases: list, shard: tuple[int, int] | None) -> list:
    """Deterministic slice of the sorted case list: case k goes to shard k mod N."""
    if shard is None:
        return cases
    index, count = shard
    return cases[index::count]


def run_predict(config: PredictConfig, input_dir: Path, output_dir: Path) -> int:
    from app import PROCESS_START
    if not input_dir.is_dir():
        print(f"error: input folder {input_dir} does not exist or is not a folder", file=sys.stderr)
        return EXIT_CANNOT_START
    try:
        io.check_output_dir(output_dir)
    except PermissionError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CANNOT_START
    io.remove_stale_partials(output_dir)
    with contextlib.ExitStack() as scratch:  # folders that .zip inputs are unpacked into, removed at the end
        listing = list_inputs(input_dir, scratch)
        return _run_listing(config, listing, input_dir, output_dir, PROCESS_START)


def list_inputs(input_dir: Path, scratch: contextlib.ExitStack) -> io.Listing:
    """NIfTI files, then the DICOM CT series in what is not NIfTI. An input folder of NIfTI files
    alone is listed exactly as before, without importing any DICOM code."""
    listing = io.list_cases(input_dir)
    if not listing.skipped:
        return listing
    from app.inference.dicom_input import find_series

    def unpack_folder() -> Path:
        return Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="flare21-dicom-")))

    found = find_series([path for path, _ in listing.skipped], unpack_folder, {case.name for case in listing.cases})
    cases = listing.cases + [io.Case(name, entry, series) for name, series, entry in found.series]
    skipped = [(path, why) for path, why in listing.skipped if path in found.not_dicom] + found.skipped
    return io.Listing(sorted(cases, key=lambda case: case.name), skipped, listing.failed + found.failed)


def _run_listing(config, listing: io.Listing, input_dir: Path, output_dir: Path, process_start) -> int:
    for path, why in listing.skipped:
        print(f"note: skipping {path.name}: {why}")
    reports = [CaseReport(name, "failed", error=error) for name, error in listing.failed]
    for report in reports:
        print(report.line(), file=sys.stderr)
    if not listing.cases:
        print(f"no cases: no .nii.gz or .nii files nor DICOM CT series in {input_dir}", file=sys.stderr)
        return EXIT_CASE_FAILED if reports else EXIT_NO_CASES
    cases = select_shard(listing.cases, config.shard)
    if not cases:  # more shards than cases: nothing to do is success, or schedulers retry it
        print(f"note: shard {config.shard[0]}/{config.shard[1]} has no cases ({len(listing.cases)} in all)")
    todo = []
    for case in cases:
        outputs = output_paths(config, output_dir, case)
        if not outputs:
            reports.append(CaseReport(case.name, "failed", error=f"{case.path.name}: a DICOM-SEG needs a DICOM "
                                      "series as input; use --output-format nifti or both for NIfTI files"))
            print(reports[-1].line(), file=sys.stderr)
        elif not config.overwrite and all(path.exists() for path in outputs):
            reports.append(CaseReport(case.name, "skipped", error="mask exists (use --overwrite to redo it)"))
            print(reports[-1].line())
        else:
            todo.append(case)
    if todo:
        status = _predict_cases(config, todo, output_dir, reports, process_start)
        if status is not None:
            return status
    print(summary_table(reports))
    return EXIT_CASE_FAILED if any(r.status == "failed" for r in reports) else EXIT_OK


def output_paths(config: PredictConfig, output_dir: Path, case: io.Case) -> list[Path]:
    """What the output format asks of this case: a NIfTI mask, a DICOM-SEG (DICOM series only)."""
    paths = [io.output_path(output_dir, case)] if config.writes_nifti() else []
    if config.writes_seg() and case.series is not None:
        paths.append(io.seg_output_path(output_dir, case))
    return paths


def _predict_cases(config, cases, output_dir, reports, process_start) -> int | None:
    from app.inference.gpu import GpuTracker
    from app.inference.predictor import Predictor
    from app.inference.weights import WeightsError

    process_start = process_start_perf(process_start)
    tracker = GpuTracker.start(config.device)
    try:
        load_start = time.perf_counter()
        try:
            predictor = Predictor(config)
        except (WeightsError, ValueError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_CANNOT_START
        process = _process_record(predictor, load_start - process_start, time.perf_counter() - load_start)
        print(f"loaded folds {list(predictor.folds)} on {predictor.device} "
              f"(mode {predictor.mode.name}, tta {'on' if predictor.mode.tta else 'off'}, "
              f"step {predictor.mode.step_size}, {'two stages' if predictor.localiser else 'whole volume'}) "
              f"in {process['weights_load_s']:.1f} s")
        accounted = sum(process["process_stages"].values())
        for case in cases:
            report = _predict_one(predictor, case, output_dir, config)
            report.gpu = tracker.case_summary()
            reports.append(report)
            print(report.line(), file=sys.stderr if report.status == "failed" else sys.stdout, flush=True)
            accounted += sum(report.stages.values())
            elapsed = time.perf_counter() - process_start
            process.update(process_seconds=round(elapsed, 3), accounted_s=round(accounted, 3),
                           unaccounted_s=round(elapsed - accounted, 3))
            append_log(output_dir, report, process, config.shard)
    finally:
        tracker.stop()
    return None


def _process_record(predictor, startup_s: float, load_s: float) -> dict:
    """What the process spent before its first case, and how it runs, for every log line."""
    stages = {"interpreter_and_imports": startup_s, **predictor.startup.seconds}
    stages["weight_load"] = stages.get("weight_load", 0.0) + load_s - predictor.startup.total  # the rest of set-up
    return {"startup_s": round(startup_s, 3), "ready_at_unix": time.time(), "weights_load_s": round(load_s, 3),
            "process_stages": {k: round(v, 4) for k, v in stages.items()},
            "folds": list(predictor.folds), "mode": predictor.mode.name, "tta": predictor.mode.tta,
            "step_size": predictor.mode.step_size, "preprocess_on": predictor.preprocess_on,
            "two_stage": predictor.localiser is not None,
            "roi_margin_mm": predictor.config.roi_margin_mm if predictor.localiser is not None else None,
            **predictor.cuda_facts}


def _predict_one(predictor, case: io.Case, output_dir: Path, config: PredictConfig) -> CaseReport:
    timer = StageTimer()
    start = time.perf_counter()
    report = CaseReport(case.name, "failed", device=str(predictor.device))
    try:
        with timer.stage("read"):
            loaded, dicom = _read_case(case)
            image = loaded.image
            check_image(image, _source(case))
        report.shape = tuple(image.GetSize())
        report.spacing = tuple(image.GetSpacing())
        mask = predictor.predict_array(image, timer)
        with timer.stage("write"):
            _write_outputs(mask, loaded, dicom, case, output_dir, predictor)
        with timer.stage("volumes"):
            report.volumes_ml = organ_volumes_ml(mask, image.GetSpacing())
        report.network_passes = predictor.window.last_network_passes
        report.roi = dict(predictor.last_roi)
        report.status = "ok"
        if config.preview_dir is not None:
            with timer.stage("preview"):
                _write_preview(image, mask, config.preview_dir / f"{case.name}.png")
    except io.CaseError as err:
        report.error = str(err)
    except Exception as err:  # one bad case must never stop the others
        report.error = f"{_source(case)}: {type(err).__name__}: {err}"
    report.seconds = round(time.perf_counter() - start, 3)
    report.stages = timer.rounded()
    return report


def _source(case: io.Case) -> str:
    return case.path.name if case.series is None else f"{case.path.name}, {case.series.label}"


def _read_case(case: io.Case):
    """(the CT as io.CaseImage, the DICOM volume with its source slices or None for NIfTI)."""
    if case.series is None:
        return io.read_image(case.path), None
    from app.inference.dicom_geometry import read_series
    volume = read_series(case.series.files, case.series.label)
    if volume.resampled:
        print(f"note: {case.name}: {volume.resampled}; resampled onto a regular grid")
    return io.CaseImage(volume.image), volume


def _write_outputs(mask, loaded: io.CaseImage, dicom, case: io.Case, output_dir: Path, predictor) -> None:
    config = predictor.config
    if config.writes_nifti():
        io.write_mask(mask, loaded, io.output_path(output_dir, case))
    if config.writes_seg() and dicom is not None:
        from app.inference.dicom_seg import SegInfo, write_seg
        info = SegInfo(predictor.mode.name, tuple(predictor.folds), predictor.weights.demo,
                       str(predictor.weights.manifest.get("source_model", "")))
        write_seg(mask, loaded.image, list(dicom.stack.headers), info, io.seg_output_path(output_dir, case))


def _write_preview(image, mask, path: Path) -> None:
    """A preview is a convenience: failing to draw one never fails a case whose mask is written."""
    try:
        from app.preview import write_preview
        path.parent.mkdir(parents=True, exist_ok=True)
        write_preview(image, mask, path)
    except Exception as err:
        print(f"warning: no preview for {path.stem}: {type(err).__name__}: {err}", file=sys.stderr)
