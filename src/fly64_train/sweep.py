"""The study summary of a sweep, rebuilt from the job directories after every job.

Hydra skips `on_multirun_end` when any job failed, so the callback rebuilds at `on_job_end`
(which runs in the job's own process, also for failed jobs and under submitit/joblib). Rebuilds
are serialised by a file lock and every file is written atomically, so parallel jobs always
leave a complete, current summary.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
from hydra.experimental.callback import Callback

from fly64_train import files, manifest, study

log = logging.getLogger(__name__)

SUMMARY_STEM = "study_summary"
COLUMNS = ("dose", "view", "gridsize", "backend", "status", "epochs", "final_loss", "amplitude_ssim",
           "phase_ssim", "amplitude_psnr", "phase_psnr", "amplitude_mae", "phase_mae", "amplitude_frc50",
           "phase_frc50", "amplitude_patch_corr", "phase_patch_corr", "bundle_sha256", "wall_time_s",
           "training_time_s", "job_dir", "error")


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
        return (float(record.get("dose") or 0), views.index(view) if view in views else len(views), str(item[0]))

    return sorted(found, key=order)


def _metric(record: dict, part: str, name: str) -> Any:
    return ((record.get("metrics") or {}).get(part) or {}).get(name)


def summary_rows(sweep_dir: Path) -> list[dict]:
    rows = []
    for job_dir, record in job_manifests(sweep_dir):
        row = {
            "dose": record.get("dose"), "view": record.get("view"), "gridsize": record.get("gridsize"),
            "backend": record.get("backend"), "status": record.get("status"),
            "epochs": record.get("epochs_completed"), "final_loss": record.get("final_loss"),
            "bundle_sha256": record.get("bundle_sha256"), "wall_time_s": record.get("wall_time_s"),
            "training_time_s": record.get("training_time_s"),
            "job_dir": os.path.relpath(job_dir, sweep_dir), "error": record.get("error"),
        }
        for part in ("amplitude", "phase"):
            for name in ("ssim", "psnr", "mae", "frc50"):
                row[f"{part}_{name}"] = _metric(record, part, name)
            row[f"{part}_patch_corr"] = _metric(record, "patchwise", f"{part}_correlation")
        rows.append(row)
    return rows


def write_summary(sweep_dir: Path, figure: bool = True) -> list[dict]:
    """Rebuild study_summary.{csv,json} and skip_summary.json (and study_summary.png if `figure`);
    return the rows."""
    from filelock import FileLock

    sweep_dir = Path(sweep_dir)
    with FileLock(str(sweep_dir / ".study_summary.lock")):
        rows = summary_rows(sweep_dir)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        files.atomic_write_bytes(sweep_dir / f"{SUMMARY_STEM}.csv", buffer.getvalue().encode())
        failed = [r for r in rows if r["status"] == "failed"]
        skipped = [r for r in rows if r["status"] == "skipped"]
        files.write_json(sweep_dir / f"{SUMMARY_STEM}.json", {
            "updated_at": manifest.utc_now(), "n_jobs": len(rows),
            "n_success": sum(r["status"] == "success" for r in rows), "n_failed": len(failed),
            "n_skipped": len(skipped), "jobs": rows})
        files.write_json(sweep_dir / manifest.SKIP_SUMMARY, {
            "timestamp": manifest.utc_now(),
            "skipped": [{"job": r["job_dir"], "reason": "reused: bundle present, verified, same config"}
                        for r in skipped],
            "failed": [{"job": r["job_dir"], "reason": r["error"]} for r in failed],
            "skipped_count": len(skipped), "failed_count": len(failed)})
        if not figure:
            return rows
        try:
            files.atomic_write_bytes(sweep_dir / f"{SUMMARY_STEM}.png", render_summary_png(sweep_dir, rows))
        except Exception as exc:  # noqa: BLE001 - a figure problem must not fail the job
            log.warning("study_summary.png not rendered: %s", exc)
    return rows


def _value(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and x is not None else math.nan


# (summary column, heatmap title) drawn by render_summary_png
HEATMAPS = (("amplitude_ssim", "amplitude SSIM"), ("phase_ssim", "phase SSIM"),
            ("phase_patch_corr", "phase: per-patch correlation"))


def render_summary_png(sweep_dir: Path, rows: list[dict]) -> bytes:
    """Heatmaps over dose × view of amplitude SSIM, phase SSIM and the per-patch phase correlation
    (which a patch's unobservable constant phase does not blur), and a grid of reconstructions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doses = sorted({float(r["dose"]) for r in rows if r["dose"] is not None})
    views = [v for v in study.VIEWS if any(r["view"] == v for r in rows)]
    n_rows = max(len(doses), 1)
    n_cols = max(len(views), 1)
    fig = plt.figure(figsize=(4 + 2.2 * n_cols * 2 + 2.2 * len(HEATMAPS), 3 + 2.2 * n_rows),
                     constrained_layout=True)
    grid = fig.add_gridspec(n_rows, len(HEATMAPS) + n_cols)
    for col, (column, title) in enumerate(HEATMAPS):
        table = np.full((len(doses), len(views)), np.nan)
        for r in rows:
            if r["dose"] is not None and r["view"] in views:
                table[doses.index(float(r["dose"])), views.index(r["view"])] = _value(r[column])
        ax = fig.add_subplot(grid[:, col])
        image = ax.imshow(table, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(views)), views)
        ax.set_yticks(range(len(doses)), [study.format_number(d) for d in doses])
        ax.set_xlabel("view")
        ax.set_ylabel("dose (photons/pattern)")
        ax.set_title(title)
        for (i, j), value in np.ndenumerate(table):
            ax.text(j, i, "failed" if math.isnan(value) else f"{value:.3f}", ha="center", va="center",
                    color="white" if math.isnan(value) or value < 0.6 else "black", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    for r in rows:
        if r["dose"] is None or r["view"] not in views:
            continue
        ax = fig.add_subplot(grid[doses.index(float(r["dose"])), len(HEATMAPS) + views.index(r["view"])])
        ax.set_axis_off()
        ax.set_title(f"{r['view']} d={study.format_number(r['dose'])}\n{r['status']}", fontsize=8)
        image = _reconstruction_phase(Path(sweep_dir) / r["job_dir"])
        if image is not None:
            ax.imshow(image, cmap="twilight")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def _reconstruction_phase(job_dir: Path) -> Optional[np.ndarray]:
    path = job_dir / "reconstruction.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.angle(data["image"])
    except (OSError, ValueError, KeyError):
        return None


class StudySummaryCallback(Callback):
    """Logs every job's start/end/status and rebuilds the sweep's study summary tables after each
    job (a killed sweep still has them); the figure, which costs about a second to render, once
    at the end of the sweep."""

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
            rows = write_summary(_sweep_dir(), figure=False)
            failed = [r["job_dir"] for r in rows if r["status"] == "failed"]
            log.info("study summary: %d jobs, failed: %s", len(rows), ", ".join(failed) or "none")
        except Exception as exc:  # noqa: BLE001 - never let the summary break the sweep
            log.warning("study summary not rebuilt: %s", exc)

    def on_multirun_end(self, config, **kwargs) -> None:
        # HydraConfig is only set inside jobs; here the sweep dir comes from the config itself
        # (Hydra's `now` resolver caches, so it resolves to the directory the jobs used).
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir)
        log.info("study summary of %d jobs in %s", len(rows), sweep_dir / (SUMMARY_STEM + ".csv"))


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
