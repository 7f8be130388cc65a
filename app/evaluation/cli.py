"""`python -m app evaluate --pred DIR --gt DIR [--csv FILE] [--plot FILE.png]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.labels import ORGANS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path,
                        help="folder of predicted masks, <name>.nii.gz")
    parser.add_argument("--gt", required=True, type=Path,
                        help="folder of ground-truth masks, <name>.nii.gz (these define the cases)")
    parser.add_argument("--csv", type=Path, default=None,
                        help="write per-case scores here (organisers' columns)")
    parser.add_argument("--plot", type=Path, default=None, help="write a box plot PNG here")
    parser.add_argument("--quiet", action="store_true", help="no per-case lines")
    parser.add_argument("--structures", type=Path, default=None,
                        help="phantoms' full label maps (the structures/ folder of `app synth --structures`): "
                             "also report lesion recall per kind, distractor false positives and the "
                             "volume predicted for organs the reference lacks")


def _case_line(case) -> str:
    if case.missing:
        return f"{case.name}: MISSING prediction, scored 0"
    scores = "  ".join(f"{organ.name} {case.dsc[organ.label]:.4f}/{case.nsd[organ.label]:.4f}"
                       for organ in ORGANS)
    return f"{case.name}: DSC/NSD {scores}"


def run(args: argparse.Namespace) -> int:
    from app.evaluation import report
    from app.evaluation.scoring import GeometryMismatchError, score_folder

    progress = None if args.quiet else (lambda case: print(_case_line(case), flush=True))
    try:
        result = score_folder(args.pred, args.gt, progress=progress, structures_dir=args.structures)
    except (GeometryMismatchError, FileNotFoundError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print()
    print(report.format_table(result.cases))
    if result.pathology is not None:
        from app.evaluation.pathology import format_pathology
        print()
        print(format_pathology(result.pathology))
    if result.missing:
        print(f"\nWARNING: {len(result.missing)} ground-truth case(s) have no prediction in "
              f"{args.pred} and score 0: {', '.join(result.missing)}", file=sys.stderr)
    if result.unmatched:
        print(f"note: {len(result.unmatched)} prediction(s) without ground truth ignored: "
              f"{', '.join(result.unmatched)}", file=sys.stderr)
    if args.csv is not None:
        report.write_csv(result.cases, args.csv)
        print(f"per-case scores: {args.csv}")
    if args.plot is not None:
        report.write_box_plot(result.cases, args.plot)
        print(f"box plot: {args.plot}")
    return 0
