"""Simulation throughput and dataset build time, printed as JSON.

    python benchmarks/simulate.py                 # all cases, default dataset sizes
    python benchmarks/simulate.py --cases sim64 --repeat 3

Cases (each runs in a fresh subprocess so its peak RSS is its own):
- sim64 / sim128: `simulate_phase_c` of the default fly scan (DatasetConfig(): 24,676 positions
  on the default 660² object; at N=128 the `study` preset's object and scan, scaled by 2) at N=64 / N=128, one dose (1e4): patterns per second (wall and per CPU
  second) and peak resident memory. Also the 3-dose rate of `simulate_doses` (one far-field pass
  shared by the doses, as the cache builds the whole study).
- build_all: wall time to build the whole default dataset at N=64 into an empty cache — 3 doses,
  phase C and both phase D views (`store.prepare_study`), plus the same done dose by dose with
  `store.prepare_dose` (what three separate `job=prepare` runs do).
The machine's core count and load average are reported: on a shared machine wall times vary.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _busy_seconds() -> float:
    """CPU-seconds all processes have spent busy since boot (Linux /proc/stat; 0 elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _timed(function, repeat: int):
    best = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        sample = (time.perf_counter() - wall, time.process_time() - cpu)
        best = sample if best is None or sample[0] < best[0] else best
    return best, result


def case_sim(N: int, repeat: int) -> dict:
    from fly64_train import study
    from fly64_train.config import DatasetConfig
    from fly64_train.data import simulate

    defaults = DatasetConfig()
    scale = N // 64  # the study preset scales the object and the scan with the probe
    obj = simulate.make_object(defaults.object_size * scale, defaults.simulation_seed, defaults.object_kind)
    probe = simulate.make_probe(N)
    x, y = simulate.fly_scan_positions(obj.shape, N, defaults.scan_step * scale, defaults.scan_row_spacing * scale,
                                       defaults.scan_jitter, defaults.simulation_seed)
    n = x.size
    (wall, cpu), _ = _timed(lambda: simulate.simulate_phase_c(obj, probe, x, y, 1e4, 42), repeat)
    (wall3, cpu3), _ = _timed(lambda: simulate.simulate_doses(obj, probe, x, y, study.DOSES, 42), 1)
    workers = simulate.default_workers()
    return {
        "N": N, "n_patterns": n, "object_size": defaults.object_size * scale, "workers": workers,
        # what the measured CPU cost gives when `workers` cores are free (threads release the GIL)
        "cpu_bound_estimate_patterns_per_s": {"one_dose": round(workers * n / cpu),
                                              "three_doses": round(workers * 3 * n / cpu3)},
        "one_dose": {"dose": 1e4, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
                     "patterns_per_s": round(n / wall), "patterns_per_cpu_s": round(n / cpu)},
        "three_doses_shared_far_field": {"seconds": round(wall3, 3), "cpu_seconds": round(cpu3, 3),
                                         "patterns_per_s": round(3 * n / wall3),
                                         "patterns_per_cpu_s": round(3 * n / cpu3)},
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def case_build_all(repeat: int) -> dict:
    from fly64_train import study
    from fly64_train.config import DatasetConfig, TrainingConfig
    from fly64_train.data import store

    out = {}
    with tempfile.TemporaryDirectory(prefix="fly64-bench-") as tmp:
        config = TrainingConfig(dataset=DatasetConfig(cache_dir=str(Path(tmp) / "a")))
        wall, cpu = time.perf_counter(), time.process_time()
        summary = store.prepare_study(config, study.DOSES)
        out["prepare_study_seconds"] = round(time.perf_counter() - wall, 3)
        out["prepare_study_cpu_seconds"] = round(time.process_time() - cpu, 3)
        config = TrainingConfig(dataset=DatasetConfig(cache_dir=str(Path(tmp) / "b")))
        wall = time.perf_counter()
        for dose in study.DOSES:
            store.prepare_dose(TrainingConfig(dataset=config.dataset, dose=dose))
        out["prepare_dose_x3_seconds"] = round(time.perf_counter() - wall, 3)
        wall = time.perf_counter()
        store.prepare_study(config, study.DOSES)  # everything cached: verify hashes only
        out["cached_lookup_seconds"] = round(time.perf_counter() - wall, 3)
        size = sum(f.stat().st_size for f in (Path(tmp) / "a").rglob("*") if f.is_file())
        out["cache_bytes"] = size
        first = summary[study.format_number(study.DOSES[0])]
        views = {}
        for view in study.SPACED_VIEWS:
            for split in ("train", "test"):
                metrics = json.loads(Path(first["phase_d"][view][f"{split}_metrics"]).read_text())
                views[f"{view}_{split}"] = {"n_accepted": metrics["n_accepted"],
                                            "probe_diameter_px": round(metrics["probe_diameter_px"], 2),
                                            "spacing_px": round(metrics["spacing_threshold_px"], 2),
                                            "nearest_overlap": round(metrics["nearest_overlap_fraction"], 4),
                                            "mean_overlap_k6": round(metrics["measured_overlap_fraction"], 4)}
        out["views_N64"] = views
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return out


CASES = {"sim64": lambda r: case_sim(64, r), "sim128": lambda r: case_sim(128, r), "build_all": case_build_all}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs (one-dose timing)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(CASES[args.case](args.repeat)))
        return
    import numpy
    import scipy

    report = {"benchmark": "simulate", "python": platform.python_version(), "numpy": numpy.__version__,
              "scipy": scipy.__version__, "cpu_count": os.cpu_count(),
              "load_average_before": [round(v, 2) for v in os.getloadavg()],
              "targets": {"patterns_per_s_N64": 10000, "whole_default_dataset_seconds": 30}}
    for name in args.cases:
        busy, wall = _busy_seconds(), time.perf_counter()
        result = subprocess.run([sys.executable, __file__, "--case", name, "--repeat", str(args.repeat)],
                                capture_output=True, text=True, check=False)
        wall = time.perf_counter() - wall
        others = _busy_seconds() - busy - (resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
                                            + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
                                            - report.get("_children_cpu", 0.0))
        report["_children_cpu"] = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
                                   + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime)
        if result.returncode != 0:
            report[name] = {"error": result.stderr.strip().splitlines()[-1:]}
            continue
        report[name] = json.loads(result.stdout.strip().splitlines()[-1])
        # share of the machine other processes used meanwhile (wall times suffer when it is high)
        report[name]["other_processes_cpu_share"] = round(max(others, 0.0) / (wall * (os.cpu_count() or 1)), 2)
    report.pop("_children_cpu", None)
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
