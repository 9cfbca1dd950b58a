"""What a test group's own patterns determine, found by iterating: per-patch correlation of the
group's solve (physics.GROUP_SOLVERS: error reduction or RAAR) with the truth, against iterations. JSON.

    python benchmarks/group_solver.py                              # dose 1e5, dense view, 64 groups
    python benchmarks/group_solver.py --view baseline --iterations 1 100 1000
    python benchmarks/group_solver.py --cache-dir outputs/quality/cache   # reuse a built dataset
    python benchmarks/group_solver.py --test-data path/to/dense_test.npz # any test split (data contract)
    python benchmarks/group_solver.py --dose 1e3 --solver raar --tolerance 1  # the noise band (model.er_tolerance)
    python benchmarks/group_solver.py --solver raar --gridsize 3 --neighbours 9 # larger groups: the seed and its 8 nearest

The study data are built (or found) in the dataset cache exactly as a job builds them; groups are
drawn from the test split as a training job draws them (data/grouping.py, --seed). Each group is
solved from a flat object with the known probe, no prior and no training: iterations 1 is the
`model.input_transform=er` step, more is what `model.er_iterations` feeds the network. The per-patch
correlation is the evaluation's (amplitude and mean-free phase over each patch's central N/2), over
every member and over the seeds alone (member 0, the pattern a group is drawn around), so it
reads beside the networks' learning curves and the likelihood yardstick (evaluation/likelihood_bound.py,
whose Adam search from the same start had reached 0.27 / 0.65 after 3,000 iterations on the dense view).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fly64_train import physics, study  # noqa: E402
from fly64_train.config import DatasetConfig, TrainingConfig, View, validate  # noqa: E402
from fly64_train.data import grouping, load_dataset, store  # noqa: E402
from fly64_train.evaluation import likelihood_bound, scores  # noqa: E402


def solve(data, gridsize: int, n_groups: int, seed: int, iterations: list[int], solver: str = "er",
          tolerance: float = 0.0, neighbours: int = study.NEIGHBOR_COUNT) -> list[dict]:
    """Per-patch correlation of the group solve (physics.GROUP_SOLVERS) after each count in `iterations` (ascending),
    its modulus projection within ± tolerance·SQRT_COUNT_STD √counts (model.er_tolerance; the data's amplitudes
    are √counts / photon_scale); seconds are cumulative from the first iteration."""
    N = data.diffraction.shape[-1]
    groups = grouping.make_groups(data.xcoords, data.ycoords, gridsize, neighbours, n_groups, seed)
    C = groups.C
    members = groups.indices.reshape(-1)
    truth = physics.extract_patches(data.obj, data.xcoords[members], data.ycoords[members], N)
    size = likelihood_bound.canvas_size(groups.relative, N)
    band = physics.band_in_amplitude(tolerance, data.metadata.get("photon_scale"))
    iterates = physics.GROUP_SOLVERS[solver](data.diffraction[groups.indices], data.probe, groups.relative, size, band)
    rows, done, started = [], 0, time.perf_counter()
    for count in iterations:  # one solve, scored as it passes each count
        estimate = next(itertools.islice(iterates, count - done - 1, None))
        done = count
        patches = (1.0 + estimate).reshape(-1, N, N)
        summary = scores.patchwise_correlation(patches, truth, N // 2)
        seeds = scores.patchwise_correlation(patches[::C], truth[::C], N // 2)  # member 0 of every group
        rows.append({"iterations": int(count), "amplitude_patch_corr": round(summary["amplitude_correlation"], 4),
                     "phase_patch_corr": round(summary["phase_correlation"], 4),
                     "seed_amplitude_patch_corr": round(seeds["amplitude_correlation"], 4),
                     "seed_phase_patch_corr": round(seeds["phase_correlation"], 4),
                     "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dose", type=float, default=1e5)
    parser.add_argument("--view", choices=list(study.VIEWS), default="dense")
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="which groups are drawn")
    parser.add_argument("--iterations", type=int, nargs="+", default=[1, 10, 50, 100, 300, 1000])
    parser.add_argument("--solver", choices=list(physics.GROUP_SOLVERS), default="er",
                        help="er: error reduction (physics.error_reduction_iterates); raar: relaxed averaged "
                             "alternating reflections (physics.raar_iterates), as model.er_solver")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="the modulus projection's noise band in standard deviations of √counts, as "
                             "model.er_tolerance (0: exact)")
    parser.add_argument("--gridsize", type=int,
                        help="groups of gridsize² patterns instead of the view's (a larger group ties more "
                             "patterns to one object; the study's jobs keep the view's)")
    parser.add_argument("--neighbours", type=int, default=study.NEIGHBOR_COUNT,
                        help="K: each group is its seed and gridsize² − 1 of the seed's K − 1 nearest other "
                             "positions (data/grouping.py); K = gridsize² takes the nearest ones")
    parser.add_argument("--cache-dir", default="outputs/cache")
    parser.add_argument("--test-data", help="a test split NPZ to read instead of building the study's")
    args = parser.parse_args(argv)
    if min(args.iterations) < 1 or args.groups < 1:
        parser.error("--iterations and --groups must be positive")
    if not args.tolerance >= 0:
        parser.error(f"--tolerance must be ≥ 0, got {args.tolerance}")
    if args.gridsize is not None and args.gridsize < 1:
        parser.error(f"--gridsize must be positive, got {args.gridsize}")
    cfg = validate(TrainingConfig(dose=args.dose, view=View[args.view], dataset=DatasetConfig(cache_dir=args.cache_dir)))
    gridsize = cfg.gridsize if args.gridsize is None else args.gridsize
    if gridsize > 1 and args.neighbours < gridsize ** 2:
        parser.error(f"--neighbours {args.neighbours} < gridsize² = {gridsize ** 2}: a group is drawn from the "
                     f"seed's K nearest positions, so K must be at least gridsize²")
    test_path = Path(args.test_data) if args.test_data else store.dataset_paths(cfg)[1]
    data = load_dataset(test_path)
    curve = solve(data, gridsize, args.groups, args.seed, sorted(set(args.iterations)), args.solver, args.tolerance,
                  args.neighbours)
    result = {"dose": args.dose, "view": args.view, "gridsize": gridsize, "neighbours": args.neighbours,
              "groups": args.groups, "solver": args.solver, "tolerance": args.tolerance, "test_data": str(test_path),
              "curve": curve}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
