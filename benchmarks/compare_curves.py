"""Learning curves of several candidates side by side, from their `benchmarks/quality.py` JSON.

    python benchmarks/compare_curves.py plain=outputs/curves_plain/quality.json \
        tiles8=outputs/curves_tiles8/quality.json --view dense --out outputs/compare_dense.png

Each argument is LABEL=PATH to a quality.json written with --steps/--curve-steps. Draws every
job of the given view (one colour per candidate and seed; test split solid, training split
dashed) into --out, and prints JSON: per candidate and seed, the per-patch amplitude / phase
correlation of both splits at each recorded step, the test split's peak phase point, and the
last point. Steps are compared as recorded: a curve is judged where it was measured, not
extrapolated.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the benchmark beside this script: its figure and JSON layout)
from fly64_train.step_curves import SPLITS  # noqa: E402  (train_study: recorded with extra training tiles only)


def _point(point: dict) -> dict:
    return {"step": point["step"], "train_seconds": point.get("train_seconds"),
            **{f"{split}_{part}": round(point[f"{split}_{part}_patch_corr"], 4)
               for split in SPLITS for part in quality.PARTS
               if math.isfinite(point.get(f"{split}_{part}_patch_corr", math.nan))}}


def summary(label: str, job: dict) -> dict:
    """One job's curve as plain numbers: every point, the test phase peak and the last point."""
    curve = [p for p in job["step_curve"] if p["step"] > 0]
    if not curve:
        return {"candidate": label, "seed": job.get("seed"), "points": []}
    peak = max(curve, key=lambda p: p["test_phase_patch_corr"])
    return {"candidate": label, "seed": job.get("seed"), "view": job.get("view"), "dose": job.get("dose"),
            "train_positions": job.get("train_positions"), "points": [_point(p) for p in curve],
            "test_phase_peak": _point(peak), "last": _point(curve[-1])}


def load(argument: str) -> tuple[str, dict]:
    label, sep, path = argument.partition("=")
    if not sep or not label or not path:
        raise SystemExit(f"{argument!r}: expected LABEL=PATH to a quality.json")
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"{file}: no such file (expected the quality.json of a benchmarks/quality.py run)")
    try:
        data = json.loads(file.read_text())
        jobs = data["jobs"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise SystemExit(f"{file}: not a benchmarks/quality.py JSON ({type(error).__name__}: {error})") from None
    return label, {**data, "jobs": jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=PATH to a quality.json")
    parser.add_argument("--view", default=None, help="only jobs of this view (default: every job)")
    parser.add_argument("--out", type=Path, default=None, help="the figure (PNG); none when omitted")
    parser.add_argument("--title", default="", help="the figure's title prefix")
    args = parser.parse_args()
    rows, summaries = [], []
    for label, data in map(load, args.runs):
        for job in data["jobs"]:
            if args.view and job.get("view") != args.view or not job.get("step_curve"):
                continue
            rows.append({**job, "curve_label": f"{label} seed {job.get('seed')}"})
            summaries.append(summary(label, job))
    if not rows:
        raise SystemExit("no job with a learning curve matched (run quality.py with --steps and --curve-steps)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        quality.step_curve_figure(args.out, rows, title=args.title)
    print(json.dumps({"benchmark": "compare_curves", "view": args.view, "figure": str(args.out) if args.out else None,
                      "curves": summaries}, indent=1))


if __name__ == "__main__":
    main()
