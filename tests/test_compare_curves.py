"""benchmarks/compare_curves.py: several candidates' learning curves read from quality.py's JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import benchmark_script, load_benchmark

SCRIPT = benchmark_script("compare_curves")


def _module():
    return load_benchmark("compare_curves")


def _point(step, test_phase, train_phase=0.5):
    return {"step": step, "train_seconds": step / 10, "test_amplitude_patch_corr": 0.1,
            "test_phase_patch_corr": test_phase, "train_amplitude_patch_corr": 0.2,
            "train_phase_patch_corr": train_phase}


def _quality_json(path: Path, phases: list[float], view: str = "dense") -> Path:
    curve = [_point(0, 0.0)] + [_point(500 * (i + 1), p) for i, p in enumerate(phases)]
    jobs = [{"dose": 1e5, "view": view, "seed": 1, "train_positions": 1097, "step_curve": curve},
            {"dose": 1e5, "view": "baseline", "seed": 1, "step_curve": curve}]
    path.write_text(json.dumps({"benchmark": "quality", "jobs": jobs}))
    return path


def test_summary_finds_the_peak_and_the_last_point_and_skips_step_zero():
    module = _module()
    job = {"seed": 3, "view": "dense", "dose": 1e5,
           "step_curve": [_point(0, 0.9), _point(500, 0.4), _point(1000, 0.6), _point(1500, 0.5)]}
    summary = module.summary("plain", job)
    assert [p["step"] for p in summary["points"]] == [500, 1000, 1500]
    assert summary["test_phase_peak"]["step"] == 1000 and summary["test_phase_peak"]["test_phase"] == 0.6
    assert summary["last"]["step"] == 1500 and summary["seed"] == 3 and summary["candidate"] == "plain"


def test_the_script_compares_two_candidates_of_one_view(tmp_path):
    first = _quality_json(tmp_path / "a.json", [0.4, 0.5])
    second = _quality_json(tmp_path / "b.json", [0.45, 0.6, 0.62])
    figure = tmp_path / "cmp.png"
    result = subprocess.run([sys.executable, str(SCRIPT), f"plain={first}", f"tiles={second}", "--view", "dense",
                             "--out", str(figure)], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert [(c["candidate"], c["last"]["step"]) for c in report["curves"]] == [("plain", 1000), ("tiles", 1500)]
    assert report["curves"][1]["test_phase_peak"]["test_phase"] == 0.62
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argument,fragment", [("nolabel", "expected LABEL=PATH"), ("x=missing.json", "no such file")])
def test_bad_arguments_say_what_was_expected(tmp_path, argument, fragment):
    result = subprocess.run([sys.executable, str(SCRIPT), argument], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and fragment in result.stderr


def test_a_file_that_is_not_a_quality_json_is_named(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "throughput"}))
    result = subprocess.run([sys.executable, str(SCRIPT), f"x={other}"], capture_output=True, text=True)
    assert result.returncode != 0 and "not a benchmarks/quality.py JSON" in result.stderr
