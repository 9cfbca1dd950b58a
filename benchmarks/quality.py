"""Reconstruction quality of the CPU-scale study, with the yardsticks that give it meaning.

    python benchmarks/quality.py                          # 3 doses × 3 views, TensorFlow, the train preset
    python benchmarks/quality.py --quick                  # dose 1e5: baseline, dense, sparse
    python benchmarks/quality.py --backend pytorch --doses 1e5 --views dense
    python benchmarks/quality.py --set trainer.epochs=30  # any config override, for every job

Every job runs as its own `fly64-train` process (one at a time: two at once halve each other's
speed) from a clean dataset cache under --out. For each job it reads the job's metrics (the lit
region of the test view; SSIM in the original study's convention: phase as (φ + π)/2π, data
range 1) and scores two yardsticks (evaluation/yardsticks.py) through the same evaluation on the
same region: the floor (a flat object at the truth's mean amplitude, zero phase) and the
dose-limited image (the truth low-passed at the frequency where the noiseless patterns carry about one
photon per detector pixel). Each score is also given as the fraction of the floor → perfect
gap it closes, (s − s_floor)/(1 − s_floor).

Prints a table and JSON (also written to <out>/quality.json) and draws <out>/quality.png:
the truth and every job's reconstruction, amplitude and phase, on the scored region. With
--curve-every K each job also scores its test view every K epochs: the JSON then holds each job's
learning curve (quality vs epoch, as gap closed) and <out>/quality_curves.png draws them.

Learning curves over seeds (the instrument that decides between candidates):

    python benchmarks/quality.py --doses 1e5 --views baseline dense --seeds 1,2,3 --steps 10000 \
        --curve-steps 250 --set model.generator=ffno --label ffno --out outputs/quality_ffno

A candidate is any set of overrides (--set, repeatable); its jobs run one at a time, one per seed
(`seed=<k>`), each for exactly --steps optimiser steps (trainer.max_steps; trainer.epochs is raised
to match, so only the recipe's early stopping can end a job sooner, and the JSON says where each
stopped). Every --curve-steps K steps each job records the per-patch amplitude and phase correlation
on fixed subsets of its test and training patterns, the loss and the time (evaluate.every_steps,
curves.csv). The JSON holds every curve, each job's final stitched SSIM and gap, and per seed the
'escape': the first point whose test phase correlation reaches 0.8, with its step and time;
<out>/learning_curves.png draws amplitude and phase correlation against steps, one colour per seed,
test solid and training dashed.

What the data alone determine (the likelihood yardstick, evaluation/likelihood_bound.py; a lower bound
where its search stops short, see benchmarks/group_solver.py):

    python benchmarks/quality.py --quick --likelihood-bound 32

adds, per view, the per-patch correlation of the maximum-likelihood object of 32 test groups (each
group's own patterns, the known probe, no prior): the "MLE patch a/p" column and the JSON's
`likelihood_limited`. Where it stays low although its likelihood beats the truth's
(`beats_truth_likelihood`), the group's patterns do not single out the truth.

What the network adds over its input (jobs fed their group's solve, e.g. job=train_raar):

    python benchmarks/quality.py --set job=train_raar --views dense --doses 1e5 --solve-yardstick

adds the "solve gaps, patch a/p" column and the JSON's `solve_*` fields: the job's own test groups
solved by its own iterations, solver and noise band from the flat object, with no network, stitched
and scored exactly as the job's patches (evaluation/yardsticks.py group_solve).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fly64_train import evaluation, physics, study  # noqa: E402
from fly64_train.evaluation import likelihood_bound, yardsticks  # noqa: E402
from fly64_train.evaluation.report import show_scored  # noqa: E402
from fly64_train.data import load_dataset  # noqa: E402
from fly64_train.inputs import model_inputs  # noqa: E402
from fly64_train.step_curves import CURVES_NAME, SPLITS, escape, read_curves  # noqa: E402

PARTS = ("amplitude", "phase")


ESCAPE_CORRELATION = 0.8  # per-patch phase correlation of a reconstruction, not a template (issue 17)


def job_dir_name(dose: float, view: str, seed: Optional[int]) -> str:
    name = study.job_name(dose, view)
    return name if seed is None else f"{name}/seed_{seed}"


def run_job(out: Path, dose: float, view: str, backend: str, extra: list[str], seed: Optional[int] = None) -> Path:
    job_dir = out / "jobs" / job_dir_name(dose, view, seed)
    if seed is not None:
        extra = [*extra, f"seed={seed}"]
    if (job_dir / "training_manifest.json").is_file():
        record = json.loads((job_dir / "training_manifest.json").read_text())
        if record.get("status") in ("success", "skipped"):
            return job_dir  # a rerun of the benchmark into the same --out reuses finished jobs
    command = [sys.executable, "-m", "fly64_train.cli", f"dose={dose}", f"view={view}", f"backend={backend}",
               f"dataset.cache_dir={out / 'cache'}", f"hydra.run.dir={job_dir}", *extra]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=out, capture_output=True, text=True)
    print(f"  {job_dir_name(dose, view, seed)}: exit {result.returncode} after {time.perf_counter() - started:.0f} s",
          file=sys.stderr, flush=True)
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
    return job_dir


def _resolved(job_dir: Path) -> dict:
    """The job's resolved config ({} when the job wrote none)."""
    path = job_dir / "resolved_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def group_solve_scores(test, record: dict, resolved: dict) -> Optional[dict]:
    """The group-solve yardstick of a job whose network is fed its group's solve (model.input_transform=er):
    the job's test groups solved by its own iterations, solver and noise band, no network, stitched and
    scored as the job's patches (evaluation.score_predictions); None for any other job."""
    model, trainer, dataset = resolved.get("model", {}), resolved.get("trainer", {}), resolved.get("dataset", {})
    if model.get("input_transform") != "er":
        return None
    started = time.perf_counter()
    # the job's own test groups and member positions, built as the runner builds them
    inputs = model_inputs(test, record["gridsize"], trainer.get("neighbor_count", study.NEIGHBOR_COUNT),
                          dataset.get("grouping_seed", study.SEEDS["grouping"]))
    band = physics.band_in_amplitude(model.get("er_tolerance", 0.0), test.metadata.get("photon_scale"))
    patches = yardsticks.group_solve(test.diffraction, test.probe, inputs.groups, model.get("er_iterations", 1),
                                     model.get("er_solver", "er"), band)
    metrics = evaluation.score_predictions(patches, inputs.positions, test.obj, probe=test.probe).metrics
    return {"iterations": model.get("er_iterations", 1), "solver": model.get("er_solver", "er"),
            "tolerance": model.get("er_tolerance", 0.0), "metrics": metrics,
            "seconds": round(time.perf_counter() - started, 1)}


def job_result(job_dir: Path, dose: float, view: str, seed: Optional[int] = None, bound_groups: int = 0,
               solve_yardstick: bool = False) -> tuple[dict, Optional[evaluation.Alignment]]:
    """The job's own metrics, the two yardsticks on its scored region, and gap fractions; and the
    job's reconstruction aligned on that region (for the figure; None for a failed job)."""
    manifest = job_dir / "training_manifest.json"
    if not manifest.is_file():  # the job died before training (a bad override, a missing file)
        return {"dose": dose, "view": view, "seed": seed, "status": "failed",
                "error": f"no training_manifest.json in {job_dir}: the job stopped before training "
                         f"(its stderr is printed above)"}, None
    record = json.loads(manifest.read_text())
    resolved = _resolved(job_dir)
    row = {"dose": record.get("dose"), "view": record.get("view"), "gridsize": record.get("gridsize"),
           "seed": resolved.get("seed"), "model_type": record.get("model_type"),
           "generator": record.get("generator"),
           "status": record.get("status"), "error": record.get("error"),
           "epochs": record.get("epochs_completed"), "wall_time_s": record.get("wall_time_s"),
           "training_time_s": record.get("training_time_s"), "train_groups": record.get("train_groups"),
           "train_positions": record.get("train_positions"), "optimiser_steps": record.get("optimiser_steps")}
    row["step_curve"] = read_curves(job_dir / CURVES_NAME)
    reached = escape(row["step_curve"], ESCAPE_CORRELATION)
    row["escape"] = None if reached is None else {key: reached[key] for key in ("step", "train_seconds", "wall_seconds")}
    metrics = record.get("metrics")
    if record.get("status") not in ("success", "skipped") or not metrics:
        return row, None
    test = load_dataset(record["test_data_path"])
    with np.load(job_dir / evaluation.RECONSTRUCTION_NAME) as saved:
        image = saved["image"]
        coverage, lit = saved["coverage"].astype(np.float64), saved["illumination"].astype(np.float64)
    threshold = metrics["illumination_threshold"]
    region = evaluation.scored_region(coverage, lit, threshold, metrics["min_coverage"])
    settings = dict(illumination_threshold=threshold, min_coverage=metrics["min_coverage"],
                    max_shift_px=metrics["registration"]["max_shift_px"])
    aligned, _ = evaluation.score_image(image, coverage, test.obj, lit, **settings)
    _, floor = evaluation.score_image(yardsticks.flat_object(test.obj, region), coverage, test.obj, lit, **settings)
    cutoff, _ = yardsticks.dose_limited_cutoff(test.obj, test.probe, test.xcoords, test.ycoords,
                                               test.metadata["photon_scale"])
    _, limited = evaluation.score_image(yardsticks.lowpass(test.obj, cutoff), coverage, test.obj, lit, **settings)
    row["dose_limited_cutoff_cycles_per_px"] = cutoff
    for part in PARTS:
        for name, source in (("", metrics), ("floor_", floor), ("dose_limited_", limited)):
            row[f"{name}{part}_ssim"] = source[part]["ssim_original"]
        row[f"{part}_ssim_raw_range"] = metrics[part]["ssim"]
        row[f"{part}_frc50"] = metrics[part]["frc50"]
        row[f"{part}_patch_corr"] = metrics["patchwise"][f"{part}_correlation"]
        row[f"{part}_gap_closed"] = yardsticks.gap_closed(row[f"{part}_ssim"], row[f"floor_{part}_ssim"])
        row[f"dose_limited_{part}_gap_closed"] = yardsticks.gap_closed(row[f"dose_limited_{part}_ssim"],
                                                                       row[f"floor_{part}_ssim"])
    row["scored_pixels"] = metrics["region"]["scored_pixels"]
    solved = group_solve_scores(test, record, resolved) if solve_yardstick else None
    if solved is not None:
        row["group_solve"] = {key: solved[key] for key in ("iterations", "solver", "tolerance", "seconds")}
        for part in PARTS:
            row[f"solve_{part}_ssim"] = solved["metrics"][part]["ssim_original"]
            row[f"solve_{part}_gap_closed"] = yardsticks.gap_closed(row[f"solve_{part}_ssim"],
                                                                    row[f"floor_{part}_ssim"])
            row[f"solve_{part}_patch_corr"] = solved["metrics"]["patchwise"][f"{part}_correlation"]
    if bound_groups:
        neighbours = resolved.get("trainer", {}).get("neighbor_count", study.NEIGHBOR_COUNT)
        row["likelihood_limited"] = likelihood_limited(record["test_data_path"], test, record["gridsize"],
                                                       bound_groups, neighbours)
    row["learning_curve"] = learning_curve(job_dir / "history.csv", row)
    return row, aligned


_BOUNDS: dict = {}


def likelihood_limited(path: str, test, gridsize: int, groups: int, neighbor_count: int) -> dict:
    """The group-MLE yardstick of a test split, gridsize and grouping (once per benchmark run: every
    seed and candidate of a view that groups alike shares it)."""
    key = (path, gridsize, groups, neighbor_count)
    if key not in _BOUNDS:
        started = time.perf_counter()
        _BOUNDS[key] = likelihood_bound.likelihood_limited(test, gridsize, n_groups=groups,
                                                           neighbor_count=neighbor_count)
        _BOUNDS[key]["seconds"] = round(time.perf_counter() - started, 1)
    return _BOUNDS[key]


def learning_curve(history_csv: Path, row: dict) -> list[dict]:
    """Per-epoch test scores (evaluate.every_epochs) with their floor→perfect gap, from history.csv."""
    import csv

    if not history_csv.is_file():
        return []
    curve = []
    with open(history_csv, newline="") as handle:
        for epoch in csv.DictReader(handle):
            if not epoch.get("test_amplitude_ssim"):
                continue
            point = {"epoch": int(epoch["epoch"]), "val_loss": float(epoch["val_loss"] or "nan")}
            for part in PARTS:
                score = float(epoch[f"test_{part}_ssim"])
                point[f"{part}_ssim"] = score
                point[f"{part}_gap_closed"] = yardsticks.gap_closed(score, row[f"floor_{part}_ssim"])
                point[f"{part}_patch_corr"] = float(epoch[f"test_{part}_patch_corr"])
            curve.append(point)
    return curve


def curve_figure(path: Path, rows: list[dict]) -> None:
    """Quality vs epoch: each job's floor→perfect gap closed in amplitude and phase."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in rows if r.get("learning_curve")]
    if not rows:
        return
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for r in rows:
        label = r.get("label") or f"{study.format_number(r['dose'])} {r['view']}"
        epochs = [p["epoch"] for p in r["learning_curve"]]
        for ax, key in zip(axes, ("amplitude_gap_closed", "phase_gap_closed", "phase_patch_corr")):
            ax.plot(epochs, [p[key] for p in r["learning_curve"]], marker="o", label=label)
    for ax, title in zip(axes, ("amplitude: gap closed", "phase: gap closed", "per-patch phase correlation")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.savefig(path, format="png", dpi=80)


def step_curve_figure(path: Path, rows: list[dict], title: str = "") -> None:
    """Per-patch amplitude and phase correlation against optimiser steps: one colour per job (seed),
    test split solid, training split dashed, its study-object groups (with extra tiles) dotted; the
    escape level a grey dotted line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in rows if r.get("step_curve")]
    if not rows:
        return
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    colours = [f"C{i}" for i in range(10)]
    for i, r in enumerate(rows):
        label = r.get("curve_label") or f"{study.format_number(r['dose'])} {r['view']} seed {r.get('seed')}"
        steps = [p["step"] for p in r["step_curve"]]
        for ax, part in zip(axes, PARTS):
            for split, style in zip(SPLITS, ("-", "--", ":")):
                values = [p.get(f"{split}_{part}_patch_corr", math.nan) for p in r["step_curve"]]
                if any(math.isfinite(v) for v in values):  # train_study: only with extra training tiles
                    ax.plot(steps, values, style, color=colours[i % len(colours)], label=f"{label} {split}")
    for ax, part in zip(axes, PARTS):
        ax.set_title(f"{title} per-patch {part} correlation".strip(), fontsize=10)
        ax.set_xlabel("optimiser steps")
        ax.axhline(ESCAPE_CORRELATION, color="grey", lw=0.8, ls=":")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.savefig(path, format="png", dpi=80)


def patch_gallery(job_dir: Path, path: Path, backend: str, count: int = 5) -> None:
    """Predicted vs true object patches of `count` test groups spread over the test view (first member;
    each patch's mean phase removed): shows whether the network reads its input or draws one template."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fly64_train import bundle, physics
    from fly64_train.specs import spec_from_bundle
    from fly64_train.backends.registry import get_backend
    from fly64_train.config import from_dict
    from fly64_train.inputs import model_inputs

    record = json.loads((job_dir / "training_manifest.json").read_text())
    weights, content = bundle.read_bundle(job_dir / "wts.h5.zip")
    trained = from_dict(content["config"])
    model = get_backend(backend).build(spec_from_bundle(content, 0, False))
    model.set_weights(weights)
    test = load_dataset(record["test_data_path"])
    inputs = model_inputs(test, trained.gridsize, trained.trainer.neighbor_count, trained.dataset.grouping_seed,
                          norm=bundle.diffraction_norm(content, job_dir / "wts.h5.zip"))
    chosen = np.linspace(0, inputs.n_groups - 1, count).astype(int)
    predicted = model.predict(inputs.x[chosen], inputs.rel[chosen]).patches[:, 0]
    xy = inputs.positions[chosen, 0]
    true = physics.extract_patches(test.obj, xy[:, 0], xy[:, 1], predicted.shape[-1])
    n = predicted.shape[-1]
    centre = np.s_[n // 4:n - n // 4, n // 4:n - n // 4]
    fig = Figure(figsize=(2.2 * count, 8.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, count, squeeze=False)
    for i in range(count):
        shown = [patch * np.exp(-1j * np.angle(np.mean(patch[centre]))) for patch in (true[i], predicted[i])]
        for row, (image, title, cmap, limits) in enumerate((
                (np.abs(shown[0]), "true amplitude", "gray", (None, None)),
                (np.abs(shown[1]), "predicted amplitude", "gray", (None, None)),
                (np.angle(shown[0]), "true phase", "twilight", (-np.pi, np.pi)),
                (np.angle(shown[1]), "predicted phase", "twilight", (-np.pi, np.pi)))):
            axes[row, i].imshow(image, cmap=cmap, vmin=limits[0], vmax=limits[1])
            axes[row, i].set_title(title, fontsize=8)
            axes[row, i].set_xticks([])
            axes[row, i].set_yticks([])
    fig.savefig(path, format="png", dpi=70)


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _mle_cell(row: dict) -> str:
    bound = row.get("likelihood_limited")
    return "–" if not bound else f"{_fmt(bound['amplitude_patch_corr'])}/{_fmt(bound['phase_patch_corr'])}"


def _solve_cell(row: dict) -> str:
    if row.get("solve_amplitude_gap_closed") is None:
        return "–"
    return (f"{_fmt(row['solve_amplitude_gap_closed'])}/{_fmt(row['solve_phase_gap_closed'])}, "
            f"{_fmt(row['solve_amplitude_patch_corr'])}/{_fmt(row['solve_phase_patch_corr'])}")


def table(rows: list[dict]) -> str:
    head = ("dose", "view", "seed", "ep", "steps", "pos", "amp SSIM", "gap", "(dose-lim)", "phase SSIM", "gap",
            "(dose-lim)", "FRC50 a/p", "patch a/p", "MLE patch a/p", "solve gaps, patch a/p", "min")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        if r.get("amplitude_ssim") is None:
            lines.append(" | ".join([study.format_number(r["dose"]), r["view"], _fmt(r.get("seed")),
                                     r.get("status") or "?"] + [""] * (len(head) - 4)))
            continue
        lines.append(" | ".join([
            study.format_number(r["dose"]), r["view"], _fmt(r.get("seed")), _fmt(r["epochs"]), _fmt(r["optimiser_steps"]),
            _fmt(r["train_positions"]),
            _fmt(r["amplitude_ssim"]), _fmt(r["amplitude_gap_closed"]), _fmt(r["dose_limited_amplitude_gap_closed"]),
            _fmt(r["phase_ssim"]), _fmt(r["phase_gap_closed"]), _fmt(r["dose_limited_phase_gap_closed"]),
            f"{r['amplitude_frc50']}/{r['phase_frc50']}",
            f"{_fmt(r['amplitude_patch_corr'])}/{_fmt(r['phase_patch_corr'])}", _mle_cell(r), _solve_cell(r),
            _fmt((r["wall_time_s"] or 0) / 60, 1)]))
    return "\n".join(lines)


def figure(path: Path, results: list[tuple[dict, Optional[evaluation.Alignment]]]) -> None:
    """Truth and each job's aligned reconstruction (amplitude row, phase row) on the scored region's box,
    drawn whole (at this size a veil over the unscored pixels hides the picture; the titles give the
    scored fraction of the box, and each job's own reconstruction.png veils the unscored pixels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = [(r, aligned) for r, aligned in results if aligned is not None]
    if not done:
        return
    fig = Figure(figsize=(2.6 * (len(done) + 1), 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(2, len(done) + 1, squeeze=False))
    truth_shown = False
    for col, (r, aligned) in enumerate(done, start=1):
        panels = ((aligned.gt_amp, aligned.pred_amp, "gray"), (aligned.gt_phase, aligned.pred_phase, "twilight"))
        for row, (gt, pred, cmap) in enumerate(panels):
            vmin, vmax = float(np.min(gt[aligned.mask])), float(np.max(gt[aligned.mask]))
            if not truth_shown:
                show_scored(axes[row, 0], gt, aligned.mask, veil=0.0, cmap=cmap, vmin=vmin, vmax=vmax)
                axes[row, 0].set_title(f"truth {PARTS[row]}", fontsize=9)
            show_scored(axes[row, col], pred, aligned.mask, veil=0.0, cmap=cmap, vmin=vmin, vmax=vmax)
            axes[row, col].set_title(f"{study.format_number(r['dose'])} {r['view']}\nSSIM {r[f'{PARTS[row]}_ssim']:.2f}, "
                                     f"gap {_fmt(r[f'{PARTS[row]}_gap_closed'])}, "
                                     f"{100 * aligned.covered_fraction:.0f} % scored", fontsize=9)
        truth_shown = True
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(path, format="png", dpi=70)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "pytorch"))
    parser.add_argument("--doses", nargs="+", type=float, default=list(study.DOSES))
    parser.add_argument("--views", nargs="+", default=list(study.VIEWS), choices=list(study.VIEWS))
    parser.add_argument("--quick", action="store_true", help="dose 1e5 only (all three views)")
    parser.add_argument("--out", type=Path, default=Path("outputs/quality"), help="jobs, cache, table, figure")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to every job (repeatable)")
    parser.add_argument("--curve-every", type=int, default=0, metavar="K",
                        help="score the test view every K epochs too: a quality learning curve per job, in the "
                             "JSON and <out>/quality_curves.png (each scoring costs about one final evaluation)")
    parser.add_argument("--seeds", default="", metavar="1,2,3",
                        help="train every job once per seed (seed=<k>): learning curves over seeds")
    parser.add_argument("--steps", type=int, default=0, metavar="S",
                        help="exactly S optimiser steps per job (trainer.max_steps=S, trainer.epochs=S as the bound)")
    parser.add_argument("--curve-steps", type=int, default=0, metavar="K",
                        help="every K optimiser steps: per-patch correlation on fixed test and training patterns, "
                             "loss and time (evaluate.every_steps=K); <out>/learning_curves.png")
    parser.add_argument("--likelihood-bound", type=int, default=0, metavar="G",
                        help="also score the likelihood-limited yardstick on G test groups of each view: the "
                             "per-group maximum-likelihood object (known probe, no prior) and its per-patch "
                             "correlation (evaluation/likelihood_bound.py; about a minute per view at G=16)")
    parser.add_argument("--solve-yardstick", action="store_true",
                        help="for jobs fed their group's solve (model.input_transform=er, e.g. job=train_raar): "
                             "also score that solve alone, the job's test groups, iterations, solver and noise "
                             "band with no network, stitched like the job's patches: what the network adds "
                             "(evaluation/yardsticks.py group_solve; NumPy, about 6 min per dense view at 50 RAAR "
                             "iterations on 2 cores)")
    parser.add_argument("--label", default="", help="the candidate's name in the JSON and the figure")
    parser.add_argument("--gallery", action="store_true",
                        help="also draw <out>/jobs/<job>/patches.png: predicted vs true patches of 5 test groups")
    args = parser.parse_args()
    if args.curve_every:
        args.overrides = [f"evaluate.every_epochs={args.curve_every}", *args.overrides]
    if args.curve_steps:
        args.overrides = [f"evaluate.every_steps={args.curve_steps}", *args.overrides]
    if args.steps:
        args.overrides = [f"trainer.max_steps={args.steps}", f"trainer.epochs={args.steps}", *args.overrides]
    seeds = [int(part) for part in args.seeds.split(",") if part.strip()] or [None]
    doses = [1e5] if args.quick else args.doses
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = [job_result(run_job(out, dose, view, args.backend, args.overrides, seed), dose, view, seed,
                          args.likelihood_bound, args.solve_yardstick)
               for dose in doses for view in args.views for seed in seeds]
    rows = [row for row, _ in results]
    report = {"benchmark": "quality", "label": args.label, "backend": args.backend, "overrides": args.overrides,
              "seeds": [s for s in seeds if s is not None], "steps": args.steps or None,
              "escape": {"correlation": ESCAPE_CORRELATION, "key": "test_phase_patch_corr",
                         "escaped": sum(r.get("escape") is not None for r in rows), "jobs": len(rows)},
              "python": platform.python_version(), "cpu_count": os.cpu_count(),
              "load_average": [round(v, 2) for v in os.getloadavg()],
              "wall_time_s": round(time.perf_counter() - started, 1),
              "ssim_convention": "original study: amplitude with its own data range, phase as (phi+pi)/2pi "
                                 "with data range 1; lit region of the test view",
              "targets_gap_closed_dense": {"1e5": 0.7, "1e4": 0.5, "1e3": 0.25},
              "jobs": rows}
    (out / "quality.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    figure(out / "quality.png", results)
    curve_figure(out / "quality_curves.png", rows)
    step_curve_figure(out / "learning_curves.png", rows, args.label)
    if args.gallery:
        for row, _ in results:
            if row.get("amplitude_ssim") is not None:
                job_dir = out / "jobs" / job_dir_name(row["dose"], row["view"], row.get("seed") if seeds != [None]
                                                      else None)
                patch_gallery(job_dir, job_dir / "patches.png", args.backend)
    print(table(rows))
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
