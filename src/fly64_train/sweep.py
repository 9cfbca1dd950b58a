"""The study summary of a sweep, rebuilt from the job directories after every job.

Hydra skips `on_multirun_end` when any job failed, so the callback rebuilds the tables at
`on_job_end` (which runs in the job's own process, also for failed jobs and under
submitit/joblib). The figure, about a second to render, is drawn once at the end of a sweep, and
also after every job once a job of the sweep has failed (no end-of-sweep call will come then) or,
under an optimising sweeper, after a job that returned no objective value: every sweep that ran
a job leaves study_summary.png. Rebuilds are serialised by a file lock and every file is written
atomically, so parallel jobs always leave a complete, current summary.

A tuning sweep (hydra/sweeper=fly64_optuna) puts every trial in its own directory; the summary
lists each with its parameters and objective, and the heatmaps show each (dose, view)'s best trial.

Before any job starts, the callback proves the output directory takes a file (`hydra.run.dir`, or
`hydra.sweep.dir` under --multirun) and a sweep takes the sweep directory's lock
(`sweep_lock.SweepLock`): a read-only directory, a full disk or a directory another live sweep
writes to ends the command with one line naming the directory and the setting.
"""
from __future__ import annotations

import atexit
import csv
import io
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from hydra.experimental.callback import Callback

from fly64_train import files, manifest, metric_table, objective, study
from fly64_train.sweep_lock import SweepDirBusy, SweepLock, describe_holder

log = logging.getLogger(__name__)

SUMMARY_STEM = "study_summary"
_JOB_COLUMNS = ("dose", "view", "method", "generator", "gridsize", "backend", "status", "epochs")
# reconstruction_time_s / _patterns_per_s: the time to reconstruct the test split from its patterns:
# a network's inference over it (after training_time_s of training), an iterative engine's run.
_RECORD_COLUMNS = ("objective", "objective_value", "test_patterns", "reconstruction_time_s",
                   "reconstruction_patterns_per_s", "bundle_sha256", "wall_time_s", "training_time_s", "job_dir",
                   "overrides", "error")
FigureWhen = Union[bool, str]  # True, False or "on_failure"


def result_columns() -> list[str]:
    """The result columns: every metric of metric_table.METRICS (any of them can be a sweep's objective)."""
    return list(metric_table.METRICS)


def columns() -> list[str]:
    """The study summary's columns, in order."""
    return [*_JOB_COLUMNS, *result_columns(), *_RECORD_COLUMNS]


def job_manifests(sweep_dir: Path) -> list[tuple[Path, dict]]:
    """(job dir, manifest) for every job under the sweep dir, in study order (dose, view)."""
    found = []
    for path in sorted(Path(sweep_dir).glob("**/" + manifest.TRAINING_MANIFEST)):
        try:
            found.append((path.parent, files.read_json(path)))
        except (OSError, ValueError) as exc:
            log.warning("unreadable job manifest %s: %s", path, exc)
    views = list(study.VIEWS)

    def order(item):
        record = item[1]
        view = record.get("view")
        natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(item[0]))]
        return (float(record.get("dose") or 0), views.index(view) if view in views else len(views),
                method_of(record) != study.PINN, natural)

    return sorted(found, key=order)


def method_of(record: dict) -> str:
    """The job's method (manifests from before the method was recorded are PtychoPINN's)."""
    return record.get("method") or study.PINN


def summary_rows(sweep_dir: Path) -> list[dict]:
    rows = []
    for job_dir, record in job_manifests(sweep_dir):
        row = {
            "dose": record.get("dose"), "view": record.get("view"), "method": method_of(record),
            "gridsize": record.get("gridsize"),
            "backend": record.get("backend"), "status": record.get("status"),
            # the network a PtychoPINN or supervised job trained (model.generator); older manifests: cnn
            "generator": record.get("generator", None if record.get("kind") == "iterative" else "cnn"),
            "epochs": record.get("epochs_completed"),
            "bundle_sha256": record.get("bundle_sha256"), "wall_time_s": record.get("wall_time_s"),
            "training_time_s": record.get("training_time_s"), "test_patterns": record.get("test_patterns"),
            "reconstruction_time_s": record.get("reconstruction_time_s"),
            "reconstruction_patterns_per_s": record.get("reconstruction_patterns_per_s"),
            "job_dir": os.path.relpath(job_dir, sweep_dir), "overrides": " ".join(record.get("overrides") or []),
            "error": record.get("error"),
        }
        row.update({name: objective.result_value(record, name) for name in result_columns()})
        goal = record.get("objective") or {}
        row.update(objective=goal.get("name"), objective_value=goal.get("value"))
        rows.append(row)
    return rows


def best_job(rows: list[dict]) -> Optional[dict]:
    """The row with the best objective value (None when no job has one)."""
    best = None
    for row in rows:
        if row["objective_value"] is None or row["objective"] not in objective.OBJECTIVES:
            continue
        if best is None or objective.better(row["objective_value"], best["objective_value"], row["objective"]):
            best = row
    return best


def write_summary(sweep_dir: Path, figure: FigureWhen = True) -> list[dict]:
    """Rebuild study_summary.{csv,json} and skip_summary.json, and study_summary.png if `figure`
    (True, or "on_failure": when any job of the sweep failed); return the rows."""
    from filelock import FileLock

    sweep_dir = Path(sweep_dir)
    with FileLock(str(sweep_dir / ".study_summary.lock")), files.configured_dirs({sweep_dir: "hydra.sweep.dir"}):
        rows = summary_rows(sweep_dir)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns())
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        files.atomic_write_bytes(sweep_dir / f"{SUMMARY_STEM}.csv", buffer.getvalue().encode())
        failed = [r for r in rows if r["status"] == "failed"]
        skipped = [r for r in rows if r["status"] == "skipped"]
        best = best_job(rows)
        goal = None if best is None else {
            "name": best["objective"], "direction": objective.direction(best["objective"]),
            "best_value": best["objective_value"], "best_job_dir": best["job_dir"]}
        files.write_json(sweep_dir / f"{SUMMARY_STEM}.json", {
            "updated_at": manifest.utc_now(), "n_jobs": len(rows),
            "n_success": sum(r["status"] == "success" for r in rows), "n_failed": len(failed),
            "n_skipped": len(skipped), "objective": goal, "methods": method_comparison(rows), "jobs": rows})
        files.write_json(sweep_dir / manifest.SKIP_SUMMARY, {
            "timestamp": manifest.utc_now(),
            "skipped": [{"job": r["job_dir"], "reason": "reused: bundle present, verified, same config"}
                        for r in skipped],
            "failed": [{"job": r["job_dir"], "reason": r["error"]} for r in failed],
            "skipped_count": len(skipped), "failed_count": len(failed)})
        if not figure or (figure == "on_failure" and not failed):
            return rows
        try:
            files.atomic_write_bytes(sweep_dir / f"{SUMMARY_STEM}.png", render_summary_png(sweep_dir, rows))
        except Exception as exc:  # noqa: BLE001 - a figure problem must not fail the job
            log.warning("study_summary.png not rendered: %s", exc)
    return rows


COMPARED = ("status", "amplitude_ssim", "phase_ssim", "amplitude_frc50", "phase_frc50", "phase_patch_corr",
            "test_patterns", "reconstruction_time_s", "reconstruction_patterns_per_s", "training_time_s", "job_dir")


def method_comparison(rows: list[dict]) -> list[dict]:
    """Per (dose, view), each method's scores and time to reconstruct the same test split side by side:
    PtychoPINN's inference (after its training) beside an iterative engine's reconstruction."""
    table: dict[tuple[float, str], dict] = {}
    for (dose, view, method), r in sorted(cell_jobs(rows).items(), key=lambda item: (item[0][0], list(study.VIEWS).index(item[0][1]))):
        entry = table.setdefault((dose, view), {"dose": dose, "view": view, "methods": {}})
        entry["methods"][method] = {key: r.get(key) for key in COMPARED}
    return list(table.values())


def _value(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and x is not None else math.nan


# (summary column, heatmap title) drawn by render_summary_png
HEATMAPS = (("amplitude_ssim", "amplitude SSIM"), ("phase_ssim", "phase SSIM"),
            ("phase_patch_corr", "phase: per-patch correlation"))


Cell = tuple[float, str, str]  # (dose, view, method)


def _cells(rows: list[dict]) -> dict[Cell, list[dict]]:
    """The jobs of each (dose, view, method)."""
    cells: dict[Cell, list[dict]] = {}
    for r in rows:
        if r["dose"] is not None and r["view"] in study.VIEWS:
            cells.setdefault((float(r["dose"]), r["view"], r["method"]), []).append(r)
    return cells


def cell_jobs(rows: list[dict]) -> dict[Cell, dict]:
    """The job shown for each (dose, view, method): the one with the best objective when a tuning
    sweep ran several there, else a successful one, else the last."""
    chosen = {}
    for key, jobs in _cells(rows).items():
        done = [r for r in jobs if r["status"] in ("success", "skipped")]
        chosen[key] = best_job(done) or (done or jobs)[-1]
    return chosen


def _columns(cells: dict[Cell, dict]) -> list[tuple[str, str]]:
    """(view, method) columns: views in study order, each view's methods side by side, PtychoPINN first."""
    pairs = {(view, method) for _, view, method in cells}
    views = list(study.VIEWS)
    return sorted(pairs, key=lambda p: (views.index(p[0]), p[1] != study.PINN, p[1]))


def render_summary_png(sweep_dir: Path, rows: list[dict]) -> bytes:
    """Heatmaps over dose × (view, method) of amplitude SSIM, phase SSIM and the per-patch phase
    correlation (which a patch's unobservable constant phase does not blur), one colour scale [0, 1]
    for every method; a grid of reconstructions' phase on one scale [−π, π], the methods of a view side
    by side; and, for a tuning sweep (several jobs per cell), the objective of every trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = cell_jobs(rows)
    doses = sorted({dose for dose, _, _ in cells})
    columns = _columns(cells)
    labels = [view if all(m == study.PINN for _, m in columns) else f"{view}\n{method}" for view, method in columns]
    tuning = any(len(jobs) > 1 for jobs in _cells(rows).values())
    n_rows = max(len(doses), 1)
    n_cols = max(len(columns), 1)
    extra = 2 if tuning else 0
    fig = plt.figure(figsize=(4 + 2.2 * n_cols * 2 + 2.2 * (len(HEATMAPS) + extra), 3 + 2.2 * n_rows),
                     constrained_layout=True)
    grid = fig.add_gridspec(n_rows, len(HEATMAPS) + n_cols + extra)
    for col, (column, title) in enumerate(HEATMAPS):
        table = np.full((len(doses), len(columns)), np.nan)
        for (dose, view, method), r in cells.items():
            table[doses.index(dose), columns.index((view, method))] = _value(r[column])
        ax = fig.add_subplot(grid[:, col])
        image = ax.imshow(table, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(columns)), labels, fontsize=8)
        ax.set_yticks(range(len(doses)), [study.format_number(d) for d in doses])
        ax.set_xlabel("view" if labels == [v for v, _ in columns] else "view, method")
        ax.set_ylabel("dose (photons/pattern)")
        ax.set_title(title + (" (best trial)" if tuning else ""))
        for (dose, view, method), r in cells.items():
            i, j = doses.index(dose), columns.index((view, method))
            value = table[i, j]
            # A NaN cell is blank (the figure's white): its label is dark.
            label = f"{value:.3f}" if not math.isnan(value) else ("failed" if r["status"] == "failed" else "n/a")
            ax.text(j, i, label, ha="center", va="center", fontsize=9,
                    color="white" if not math.isnan(value) and value < 0.6 else "black")
        fig.colorbar(image, ax=ax, shrink=0.8)
    for (dose, view, method), r in cells.items():
        ax = fig.add_subplot(grid[doses.index(dose), len(HEATMAPS) + columns.index((view, method))])
        ax.set_axis_off()
        label = f"{r['job_dir']} " if tuning else ""
        ax.set_title(f"{view} d={study.format_number(dose)} {method}\n{label}{r['status']}", fontsize=8)
        image = _reconstruction_phase(Path(sweep_dir) / r["job_dir"])
        if image is not None:
            ax.imshow(image, cmap="twilight", vmin=-np.pi, vmax=np.pi)
    if tuning:
        _objective_panel(fig.add_subplot(grid[:, len(HEATMAPS) + n_cols:]), rows)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def _objective_panel(ax, rows: list[dict]) -> None:
    """Objective value of every job in sweep order; jobs without one (failed) as red marks on the
    bottom edge."""
    for i, r in enumerate(rows):
        value = _value(r["objective_value"])
        if math.isnan(value):
            ax.plot(i, 0.02, "x", color="tab:red", transform=ax.get_xaxis_transform(), clip_on=False)
        else:
            ax.plot(i, value, "o", color="tab:blue")
    best = best_job(rows)
    if best is not None:
        ax.plot(rows.index(best), best["objective_value"], "*", color="tab:orange", markersize=14)
    name = next((r["objective"] for r in rows if r["objective"]), "objective")
    direction = objective.direction(name) if name in objective.OBJECTIVES else ""
    ax.set_title(f"{name} ({direction}) per trial" + (f"\nbest: {best['job_dir']}" if best else ""), fontsize=9)
    ax.set_xticks(range(len(rows)), [r["job_dir"] for r in rows], rotation=90, fontsize=7)
    ax.set_ylabel(name)


def _reconstruction_phase(job_dir: Path) -> Optional[np.ndarray]:
    """The phase of a job's reconstruction, cut to the scored region's box when the file records it
    (an iterative engine's image spans the whole object, a stitched one only what the scan covered)."""
    path = job_dir / "reconstruction.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            phase = np.angle(data["image"])
            if "bbox" in data.files:
                r0, r1, c0, c1 = (int(v) for v in data["bbox"])
                phase = phase[r0:r1, c0:c1]
            return phase
    except (OSError, ValueError, KeyError):
        return None


class StudySummaryCallback(Callback):
    """Logs every job's start/end/status and rebuilds the sweep's study summary tables after each
    job (a killed sweep still has them); the figure, which costs about a second to render, at the
    end of the sweep, and after a job when the end may not come (`_figure_now`)."""

    def __init__(self) -> None:
        self._started = ""
        self._lock: Optional[SweepLock] = None

    def on_run_start(self, config, **kwargs) -> None:
        _usable_or_exit(lambda: files.check_writable(config.hydra.run.dir, "hydra.run.dir"))

    def on_multirun_start(self, config, **kwargs) -> None:
        self._started = manifest.utc_now()
        sweep_dir = Path(config.hydra.sweep.dir)
        _usable_or_exit(lambda: files.check_writable(sweep_dir, "hydra.sweep.dir"))
        self._lock = SweepLock(sweep_dir)
        stale = _usable_or_exit(self._lock.acquire)
        atexit.register(self._lock.release)  # a failed job skips on_multirun_end
        if stale:
            log.warning("taking over the lock of a sweep that is no longer running (%s) in %s",
                        describe_holder(stale), sweep_dir)

    def on_job_start(self, config, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig

        if _is_multirun(config):
            log.info("job %s starting: %s", HydraConfig.get().job.num, " ".join(HydraConfig.get().overrides.task))

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if not _is_multirun(config):
            return
        from hydra.core.utils import JobStatus

        overrides = " ".join(job_return.overrides or [])
        if job_return.status == JobStatus.FAILED:
            log.error("job FAILED (%s): %s", overrides, job_return._return_value)  # terminal and job log
        else:
            log.info("job finished (%s): %s", overrides, job_return.status.name)
        try:
            rows = write_summary(_sweep_dir(), figure=_figure_now(job_return))
            failed = [r["job_dir"] for r in rows if r["status"] == "failed"]
            log.info("study summary: %d jobs, failed: %s", len(rows), ", ".join(failed) or "none")
        except Exception as exc:  # noqa: BLE001 - never let the summary break the sweep
            log.warning("study summary not rebuilt: %s", exc)

    def on_multirun_end(self, config, **kwargs) -> None:
        # HydraConfig is only set inside jobs; here the sweep dir comes from the config itself
        # (Hydra's `now` resolver caches, so it resolves to the directory the jobs used).
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            rows = write_summary(sweep_dir)
        finally:
            if self._lock is not None:
                self._lock.release()
        log.info("study summary of %d jobs in %s", len(rows), sweep_dir / (SUMMARY_STEM + ".csv"))
        best = best_job(rows)
        if best is not None:
            log.info("best %s (%s): %.6g in %s", best["objective"], objective.direction(best["objective"]),
                     best["objective_value"], best["job_dir"])
        # The basic sweeper ends a sweep with a failed job with exit code 1 before this point; a
        # sweeper that records failed jobs and goes on (Optuna, max_failure_rate) gets here: the
        # command still exits 1 and names them.
        failed = [r["job_dir"] for r in rows
                  if r["status"] == "failed" and _finished_at(sweep_dir / r["job_dir"]) >= self._started]
        if failed:
            print(f"fly64-train: {len(failed)} of {len(rows)} jobs failed: {', '.join(failed)} "
                  f"(errors in {SUMMARY_STEM}.csv and skip_summary.json)", file=sys.stderr, flush=True)
            sys.exit(1)


def _usable_or_exit(check):
    """Run a pre-flight check; its failure ends the command with one line (Hydra turns a
    callback's exception into a warning and goes on, so this exits itself)."""
    try:
        return check()
    except (files.StorageError, SweepDirBusy) as exc:
        print(f"fly64-train: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def _finished_at(job_dir: Path) -> str:
    try:
        return str(files.read_json(job_dir / manifest.TRAINING_MANIFEST).get("finished_at") or "")
    except (OSError, ValueError):
        return ""


def _figure_now(job_return) -> FigureWhen:
    """When to draw the figure after this job: once any job has failed, Hydra's basic sweeper will
    skip on_multirun_end; an optimising sweeper (Optuna) counts a job that returned no number as a
    failed trial and stops before it when no trial has a value. Otherwise the end draws it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobStatus

    if job_return.status == JobStatus.COMPLETED and not isinstance(job_return.return_value, (int, float)):
        if not str(HydraConfig.get().sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return True
    return "on_failure"


def _sweep_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().sweep.dir)


def _is_multirun(config) -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False
