"""Training and inference throughput of the PtychoPINN backends at N=64 (batch 16), printed as JSON.

    python benchmarks/train_throughput.py [--backend tensorflow|pytorch|both] [--threads 0] [--rounds 1]

Each backend runs in its own fresh process (so import/trace time, the time from process start to
the first completed training step and peak memory are that backend's alone), on synthetic data
made with physics.py: a random smooth complex object, a focused probe, gridsize 1 (rel = 0) and
gridsize 2 (member offsets within about ±20 px of the group centre). Gridsize 2 is measured
with the reference's channel-stacked network (`gs2`, the architecture the targets refer to) and
with the default shared-member network (`gs2_shared`: each of the 4 patterns through the
single-pattern network, so 4× the convolutions per group), all at n_filters_scale 2; the
`train` preset's networks (`preset_*`: n_filters_scale 1, shared members) with the reference's
padded object head and with the full head (model.pad_object=false); and each other generator
in the train preset (`preset_*_ffno`: model.generator=ffno, width 32; `preset_*_unet`:
model.generator=unet, width 16), and the preset's network on the er input with 1 and 100
error-reduction iterations (`preset_gs2_shared_er1`, `_er100`), and 50 RAAR iterations with the
residual heads (`_raar50`, and `_raar50_unet` with the U-Net). Reported per backend:
groups/s for training (best and median of several timed repeats) and inference, seconds from
process start to the first completed training step, peak RSS, the parameter count, analytic FLOPs
per step (convolutions: forward 2·H·W·9·Cin·Cout, training ≈ 3× forward) and the fraction of
this machine's measured float32 matmul peak the training step reaches. The machine may be
shared: the CPU pressure / load average around the run are recorded with the numbers, and
`--rounds R` alternates the backends' workers R times (tensorflow, pytorch, tensorflow, ...) and
keeps each backend's best round, so both meet the same conditions; every round is listed.

Targets on 2 cores: ≥ 50 groups/s gridsize 1, ≥ 45 groups/s gridsize 2, first step < 10 s,
peak memory < 2 GB.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fly64_train.backends.registry import BACKENDS  # every registered backend

N = 64
BATCH = 16
N_FILTERS_SCALE = 2
REL_SPREAD = 20.0  # gridsize-2 member offsets (pixels) around the group centre
TARGETS = {"train_groups_per_s_gs1": 50.0, "train_groups_per_s_gs2": 45.0, "first_step_s": 10.0,
           "peak_rss_mb": 2048.0}


# ---------------------------------------------------------------------------------------------
# Framework-free helpers

def process_age() -> float:
    """Seconds since this process was started (Linux /proc; else since this module was imported)."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat: starttime, clock ticks after boot
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def machine_load() -> dict:
    out = {"loadavg_1min": os.getloadavg()[0], "cpu_count": os.cpu_count()}
    try:
        with open("/proc/pressure/cpu") as fh:
            out["cpu_pressure_some_avg10"] = float(fh.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        pass
    return out


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Best float32 GFLOP/s of a size² NumPy matmul on this machine."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def ffno_flops(geometry) -> int:
    """Analytic forward FLOPs of the ffno generator per pattern: its convolutions (2·N²·k²·Cin·Cout) and,
    per block and axis, the truncated DFT and its inverse (4 real matmuls, 2·w·N²·m each) and the complex
    mode mixing (4 real products, 2·N·m·w² each)."""
    layers, n = geometry.ffno(), geometry.N
    convs = [*layers.lift, *(c for b in layers.blocks for c in b), *(c for b in layers.refiners for c in b),
             layers.head_amp, layers.head_phase]
    total = sum(2 * n * n * c.size ** 2 * c.in_channels * c.out_channels for c in convs)
    w, m = layers.spectral.width, layers.spectral.modes
    total += len(layers.blocks) * 2 * (4 * 2 * w * n * n * m + 4 * 2 * n * m * w * w)
    return total


def unet_flops(geometry) -> int:
    """Analytic forward FLOPs of the unet generator per pattern: every convolution (2·H·W·k²·Cin·Cout) at
    its level's resolution N/2^i (the bottleneck's N/2^L), the heads at N."""
    layers, n = geometry.unet(), geometry.N

    def flops(convs, size):
        return sum(2 * size * size * c.size ** 2 * c.in_channels * c.out_channels for c in convs)

    levels = len(layers.encoder)
    total = sum(flops(block, n >> i) for i, block in enumerate(layers.encoder))
    total += flops(layers.bottleneck, n >> levels)
    total += sum(flops(block, n >> i) for i, block in zip(reversed(range(levels)), layers.decoder))
    return total + flops([layers.head_amp, layers.head_phase], n)


def conv_flops(geometry) -> dict:
    """Analytic forward FLOPs per group of the generator (cnn: every 3×3 convolution, 2·H·W·9·Cin·Cout)."""
    def flops(conv, size):
        return 2 * size * size * 9 * conv.in_channels * conv.out_channels

    if geometry.generator in ("ffno", "unet"):
        total = ((ffno_flops if geometry.generator == "ffno" else unet_flops)(geometry)
                 * (geometry.channels if geometry.shared_members else 1))
        return {"forward_per_group": total, "train_per_group": 3 * total, "train_per_step": 3 * total * BATCH}

    total, size = 0, geometry.N
    for block in geometry.encoder():
        total += sum(flops(conv, size) for conv in block)
        size //= 2
    bottom = size
    for branch in ("amp", "phase"):
        layers, size = geometry.decoder(branch), bottom
        for block in layers["blocks"]:
            total += sum(flops(conv, size) for conv in block)
            size *= 2
        total += flops(layers["head"], size)  # at N/2 (padded head) or N (full head: one more block)
        if geometry.border_path:
            total += sum(flops(conv, size) for conv in layers["border_block"])
            total += flops(layers["border_out"], 2 * size)  # at N
    if geometry.shared_members:
        total *= geometry.channels  # one network pass per member
    return {"forward_per_group": total, "train_per_group": 3 * total, "train_per_step": 3 * total * BATCH}


def synthetic_data(gridsize: int, n_groups: int, seed: int = 0):
    """Diffraction amplitudes (B,N,N,C), offsets rel (B,C,2) and the model probe, via physics.py."""
    from fly64_train import architecture, physics

    rng = np.random.default_rng(seed)
    size = 4 * N
    yy, xx = np.mgrid[:size, :size] / size
    amp, phase = np.full_like(xx, 0.5), np.zeros_like(xx)
    for _ in range(6):
        (fx, fy), (p1, p2) = rng.uniform(3, 15, 2), rng.uniform(0, 6, 2)
        amp += 0.06 * np.sin(fx * xx + p1) * np.cos(fy * yy + p2)
        phase += 0.3 * np.sin(fy * xx + p2) * np.cos(fx * yy + p1)
    obj = (amp * np.exp(1j * phase)).astype(np.complex64)
    idx = np.arange(N) - N / 2 + 0.5
    r2 = idx[:, None] ** 2 + idx[None, :] ** 2
    probe = architecture.model_probe(np.exp(-r2 / (2 * (N / 8) ** 2)) * np.exp(1j * 0.003 * r2), N, 0.5, False)
    C = gridsize * gridsize
    centres = rng.uniform(1.5 * N, size - 1.5 * N, size=(n_groups, 2))
    rel = rng.uniform(-REL_SPREAD, REL_SPREAD, (n_groups, C, 2)) if C > 1 else np.zeros((n_groups, 1, 2))
    positions = (centres[:, None, :] + rel).reshape(-1, 2)
    patches = physics.extract_patches(obj, positions[:, 0], positions[:, 1], N)
    amplitude = physics.far_field_amplitude(physics.illuminate(patches, probe)).astype(np.float32)
    x = np.ascontiguousarray(np.moveaxis(amplitude.reshape(n_groups, C, N, N), 1, -1))
    return x, rel.astype(np.float32), probe


# (label, gridsize, model.member_encoding, model.n_filters_scale, model.pad_object, model.generator, other
# model fields) measured by every worker: the reference network (n_filters_scale 2, padded head), the
# train preset's networks (n_filters_scale 1, shared members) with the reference's padded head and with
# the full head, every other generator in the train preset (its defaults: the ffno at width 32), and the
# preset's network on the group's iterated error reduction (model.er_iterations; its FFTs are not in
# the FLOP count).
CASES = (("gs1", 1, "shared", N_FILTERS_SCALE, True, "cnn", {}), ("gs2", 2, "stacked", N_FILTERS_SCALE, True, "cnn", {}),
         ("gs2_shared", 2, "shared", N_FILTERS_SCALE, True, "cnn", {}),
         ("preset_gs1_padded", 1, "shared", 1, True, "cnn", {}), ("preset_gs1_full", 1, "shared", 1, False, "cnn", {}),
         ("preset_gs2_shared_padded", 2, "shared", 1, True, "cnn", {}),
         ("preset_gs2_shared_full", 2, "shared", 1, False, "cnn", {}),
         ("preset_gs1_ffno", 1, "shared", 1, False, "ffno", {}),
         ("preset_gs2_shared_ffno", 2, "shared", 1, False, "ffno", {}),
         ("preset_gs1_unet", 1, "shared", 1, False, "unet", {}),
         ("preset_gs2_shared_unet", 2, "shared", 1, False, "unet", {}),
         ("preset_gs2_shared_er1", 2, "shared", 1, False, "cnn", {"input_transform": "er"}),
         ("preset_gs2_shared_er100", 2, "shared", 1, False, "cnn", {"input_transform": "er", "er_iterations": 100}),
         ("preset_gs2_shared_raar50", 2, "shared", 1, False, "cnn",
          {"input_transform": "er", "er_solver": "raar", "er_iterations": 50, "er_residual": True}),
         ("preset_gs2_shared_raar50_unet", 2, "shared", 1, False, "unet",
          {"input_transform": "er", "er_solver": "raar", "er_iterations": 50, "er_residual": True}))


def make_spec(backend: str, gridsize: int, rel: np.ndarray, probe: np.ndarray, member_encoding: str,
              n_filters_scale: int = N_FILTERS_SCALE, pad_object: bool = True, generator: str = "cnn",
              fields: dict | None = None):
    """The spec the runner would build (backend.compile as the backend's preset has it); `fields`: other
    ModelConfig fields."""
    from fly64_train import architecture, config
    from fly64_train.backends import registry
    from fly64_train.specs import spec_from_config

    view = "baseline" if gridsize == 1 else "dense"
    cfg = config.validate(config.TrainingConfig(
        view=view, dose=1e4, backend=config.BackendConfig(name=backend, compile=registry.entry(backend).compiles),
        model=config.ModelConfig(N=N, n_filters_scale=n_filters_scale, member_encoding=member_encoding,
                                 pad_object=pad_object, generator=generator, **(fields or {}))))
    return spec_from_config(cfg, architecture.padded_size_for(N, rel), probe)


def _rate(seconds: list[float], groups: int) -> dict:
    return {"best": round(groups / min(seconds), 2), "median": round(groups / statistics.median(seconds), 2)}


# ---------------------------------------------------------------------------------------------
# One backend, in its own process

def run_worker(name: str, threads: int, steps: int, repeats: int) -> dict:
    from fly64_train.backends.registry import get_backend

    backend = get_backend(name)
    backend.configure(threads=threads, deterministic=False, seed=0)
    result: dict = {"backend": name, "versions": backend.versions(), "load_before": machine_load()}
    if name == "pytorch":
        import torch

        from fly64_train.backends.pytorch import retain_freed_memory
        result["framework"] = {"intra_op_threads": torch.get_num_threads(),
                               "mkldnn": torch.backends.mkldnn.is_available(),
                               "memory_format": "channels_last", "freed_memory_retained": retain_freed_memory()}
    n_pool = 4 * BATCH  # 4 distinct batches, cycled

    for label, gridsize, encoding, width, pad_object, generator, fields in CASES:
        x, rel, probe = synthetic_data(gridsize, n_pool, seed=gridsize)
        spec = make_spec(name, gridsize, rel, probe, encoding, width, pad_object, generator, fields)
        model = backend.build(spec)
        batches = [(x[i:i + BATCH], rel[i:i + BATCH]) for i in range(0, n_pool, BATCH)]
        model.train_step(*batches[0])
        if label == "gs1":
            result["first_step_s"] = round(process_age(), 2)
        for i in range(3):  # warm-up
            model.train_step(*batches[(i + 1) % len(batches)])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(steps):
                model.train_step(*batches[i % len(batches)])
            times.append(time.perf_counter() - start)
        result[f"train_groups_per_s_{label}"] = _rate(times, steps * BATCH)
        model.predict(x, rel)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict(x, rel)
            times.append(time.perf_counter() - start)
        result[f"inference_groups_per_s_{label}"] = _rate(times, n_pool)
        geometry = spec.geometry
        if label == "gs1":
            shapes = geometry.parameter_shapes()
            result["parameters"] = int(sum(np.prod(s) for k, s in shapes.items() if k != "probe"))
            result["probe_values"] = int(np.prod(shapes["probe"]))
            result["flops_unit"] = "GFLOP"
        result[f"flops_{label}"] = {k: round(v / 1e9, 3) for k, v in conv_flops(geometry).items()}
        del model
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["matmul_peak_gflops_float32"] = round(matmul_peak_gflops(), 1)  # after: not in first_step_s
    result["load_after"] = machine_load()
    return result


def run_in_subprocess(name: str, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--threads", str(args.threads),
               "--steps", str(args.steps), "--repeats", str(args.repeats)]
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"backend": name, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _round_score(result: dict) -> float:
    """A round's training throughput (gridsize 1 + 2): the least disturbed round scores highest."""
    return sum(result.get(f"train_groups_per_s_gs{g}", {}).get("best", 0.0) for g in (1, 2))


def summarise(result: dict, peak: float) -> None:
    if "error" in result or "skipped" in result:
        return
    own = result.get("matmul_peak_gflops_float32", 0.0)
    # The worker's own matmul well below the machine's best: other processes took CPU meanwhile.
    result["contended"] = bool(own < 0.8 * peak or result["load_after"].get("cpu_pressure_some_avg10", 0) > 50)
    peak = max(peak, own)
    for label, *_ in CASES:
        rate = result[f"train_groups_per_s_{label}"]["best"]
        achieved = rate * result[f"flops_{label}"]["train_per_group"]  # GFLOP/s
        result[f"train_gflops_per_s_{label}"] = round(achieved, 1)
        result[f"fraction_of_matmul_peak_{label}"] = round(achieved / peak, 3)
    met = {}
    for key, target in TARGETS.items():
        value = result[key]["best"] if isinstance(result[key], dict) else result[key]
        met[key] = bool(value >= target) if key.startswith("train") else bool(value < target)
    result["targets_met"] = met


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("--steps", type=int, default=8, help="training steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (best and median reported)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the backends' workers this many times; each backend's best round counts")
    parser.add_argument("--worker", choices=list(BACKENDS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    src = Path(__file__).resolve().parents[1] / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.insert(0, str(src))

    if args.worker:
        print(json.dumps(run_worker(args.worker, args.threads, args.steps, args.repeats)))
        return 0

    peak = matmul_peak_gflops()
    report: dict = {"benchmark": "train_throughput", "N": N, "batch_size": BATCH,
                    "n_filters_scale": N_FILTERS_SCALE, "gs2_rel_spread_px": REL_SPREAD,
                    "threads": args.threads or os.cpu_count(), "matmul_peak_gflops_float32": round(peak, 1),
                    "matmul_peak_method": "numpy float32 2048x2048 @ 2048x2048, best of 10 (here and at the "
                                          "end of each worker; fractions use the highest)",
                    "matmul_peak_note": "oneDNN's AVX-512 convolutions can beat NumPy's sgemm, so a fraction "
                                        "above 1 is possible; a busy machine lowers every number",
                    "targets": TARGETS, "backends": {}}
    names = list(BACKENDS) if args.backend == "both" else [args.backend]
    rounds: dict[str, list] = {}
    for _ in range(max(1, args.rounds)):
        for name in names:
            if importlib.util.find_spec(f"fly64_train.backends.{name}") is None:
                report["backends"][name] = {"skipped": f"fly64_train.backends.{name} does not exist yet"}
                continue
            result = run_in_subprocess(name, args)
            summarise(result, peak)
            rounds.setdefault(name, []).append(result)
    for name, results in rounds.items():
        measured = [r for r in results if "train_groups_per_s_gs1" in r] or results
        report["backends"][name] = max(measured, key=_round_score)
        if len(results) > 1:
            report["backends"][name]["rounds"] = [
                {key: r[key]["best"] for key in ("train_groups_per_s_gs1", "train_groups_per_s_gs2") if key in r}
                | {"contended": r.get("contended")} for r in results]
    ok = {k: v for k, v in report["backends"].items() if "train_groups_per_s_gs1" in v}
    if "tensorflow" in ok and "pytorch" in ok:
        report["pytorch_over_tensorflow"] = {
            f"train_gs{g}": round(ok["pytorch"][f"train_groups_per_s_gs{g}"]["best"]
                                  / ok["tensorflow"][f"train_groups_per_s_gs{g}"]["best"], 3) for g in (1, 2)}
        report["pytorch_over_tensorflow"].update({
            f"inference_gs{g}": round(ok["pytorch"][f"inference_groups_per_s_gs{g}"]["best"]
                                      / ok["tensorflow"][f"inference_groups_per_s_gs{g}"]["best"], 3)
            for g in (1, 2)})
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
