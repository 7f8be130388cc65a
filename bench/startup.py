"""Start-up: process start until the weights are loaded and the first tile can run, against
`python -c "import torch"` (the floor), alternated in one run so machine noise hits both.

    python -m bench.startup [--weights weights] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent


def import_torch_s() -> float:
    start = time.time()
    out = subprocess.run([sys.executable, "-c", "import time, torch; print(time.time())"],
                         capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1]) - start


def predict_ready_s(weights: Path, work: Path) -> float:
    start = time.time()
    subprocess.run([sys.executable, "-m", "app", "predict", "-i", str(work / "in"), "-o", str(work / "out"),
                    "--weights", str(weights), "--folds", "0", "--no-tta", "--device", "cpu", "--quiet",
                    "--overwrite"], cwd=ROOT, capture_output=True, check=True)
    record = json.loads((work / "out" / "predict_log.jsonl").read_text().splitlines()[-1])
    return record["ready_at_unix"] - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        image = sitk.Image(40, 40, 8, sitk.sitkInt16)
        sitk.WriteImage(image, str(work / "in" / "tiny_0000.nii.gz"))
        torch_s, ready_s = [], []
        for _ in range(args.repeats):
            torch_s.append(import_torch_s())
            ready_s.append(predict_ready_s(args.weights, work))
    t, r = statistics.median(torch_s), statistics.median(ready_s)
    print(f"import torch: median {t:.2f} s; predict ready (weights loaded): median {r:.2f} s; "
          f"difference {r - t:+.2f} s over {args.repeats} alternated runs")


if __name__ == "__main__":
    main()
