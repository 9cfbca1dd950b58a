"""Sweep overhead: wall time of a 6-job smoke sweep (basic launcher) against the sum of its jobs'
own times (each job's run_job wall time: data, training, bundle, evaluation), as JSON.

    .venv/bin/python benchmarks/sweep_overhead.py [--launcher basic|fly64_local] [--backend tensorflow]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launcher", default="basic")
    parser.add_argument("--backend", default="tensorflow")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        command = [sys.executable, "-m", "fly64_train.cli", "--multirun", "job=smoke", f"backend={args.backend}",
                   "dose=1000,100000", "view=baseline,dense,sparse"]
        if args.launcher != "basic":
            command.append(f"hydra/launcher={args.launcher}")
        start = time.perf_counter()
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"sweep failed:\n{result.stderr[-4000:]}")
        sweep = next((cwd / "outputs" / "multirun").iterdir())
        records = [json.loads(p.read_text()) for p in sweep.glob("dose_*/*/training_manifest.json")]
        job_total = sum(r["wall_time_s"] for r in records)
        training_total = sum(r.get("training_time_s") or 0 for r in records)
        print(json.dumps({
            "benchmark": "sweep_overhead", "launcher": args.launcher, "backend": args.backend,
            "jobs": len(records), "sweep_wall_s": round(wall, 2), "sum_job_wall_s": round(job_total, 2),
            "sum_training_loop_s": round(training_total, 2),
            "ratio_sweep_to_jobs": round(wall / job_total, 3),
            "target_ratio": 1.15,
            "note": "job wall = run_job (data, training, bundle, evaluation); the rest is Hydra, imports, summaries",
        }, indent=2))


if __name__ == "__main__":
    main()
