"""The dataset cache: layout, contract of its files, determinism, concurrency, corruption, npz source."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from fly64_train.config import DatasetConfig, TrainingConfig
from fly64_train import physics, study
from fly64_train.data import cache, recipe, simulate, store
from fly64_train.data.overlap import overlap_metrics
from fly64_train.data.contract import ContractError, load_dataset, save_dataset


def _config(tmp_path: Path, view: str = "baseline", dose: float = 1000.0, cache: str = "cache", **dataset):
    settings = dict(object_size=192, scan_step=8.0, scan_row_spacing=10.0, cache_dir=str(tmp_path / cache))
    settings.update(dataset)
    return TrainingConfig(dataset=DatasetConfig(**settings), view=view, dose=dose)


def _builds(config: TrainingConfig) -> list[dict]:
    entry = Path(store.planned_paths(config)["cache_entry"]).parents[1]
    log = entry / "builds.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_baseline_builds_phase_c_files_that_follow_the_contract(tmp_path):
    config = _config(tmp_path)
    plan = store.planned_paths(config)
    assert plan["exists"] is False and plan["source"] == "synthetic"
    assert not (tmp_path / "cache").exists()  # planning builds nothing
    train_path, test_path = store.dataset_paths(config)
    assert (str(train_path), str(test_path)) == (plan["train"], plan["test"])
    assert train_path.name == "patched_train.npz" and train_path.parent.name == "dose_1000"
    assert train_path.parent.parent.name == "phase_c"
    train, test = load_dataset(train_path), load_dataset(test_path)
    n_scan = simulate.fly_scan_positions((192, 192), 64, 8.0, 10.0, 0.5, 42)[0].size
    assert train.N == 64 and train.n + test.n == n_scan == 16 * 13  # 16 exposures per row, 13 rows
    assert train.ycoords.max() < test.ycoords.min()  # split along y
    meta = train.metadata
    assert meta["phase"] == "C" and meta["dose"] == 1000.0 and meta["N"] == 64 and meta["split"] == "train"
    assert meta["seeds"]["simulation"] == 42 and meta["n_positions"] == n_scan
    assert meta["scan"]["step_px"] == 8.0 and meta["scan"]["row_spacing_px"] == 10.0
    assert meta["probe_diameter_px"] == pytest.approx(38.0, abs=0.5)  # the synthetic probe's footprint
    assert meta["split_rule"]["split_point"] == pytest.approx(simulate.split_point(
        np.concatenate([train.ycoords, test.ycoords])))
    counts = (train.diffraction.astype(np.float64) * meta["photon_scale"]) ** 2
    np.testing.assert_allclose(counts, np.round(counts), atol=0.01)
    assert counts.sum(axis=(1, 2)).mean() == pytest.approx(meta["mean_counts_per_pattern"], rel=1e-5)
    both = np.concatenate([train.diffraction, test.diffraction]).astype(np.float64)
    # the dose is the mean over the whole dataset (a split's mean follows its part of the object)
    assert ((both * meta["photon_scale"]) ** 2).sum(axis=(1, 2)).mean() == pytest.approx(1000, rel=0.02)
    assert sorted(np.concatenate([train.scan_index, test.scan_index]).tolist()) == list(range(n_scan))
    assert store.planned_paths(config)["exists"] is True
    assert [b["unit"] for b in _builds(config)] == ["phase_c/dose_1000"]
    marker = json.loads((train_path.parent / "complete.json").read_text())
    assert set(marker["files"]) == {"patched_train.npz", "patched_test.npz"}
    assert marker["files"]["patched_train.npz"]["sha256"] == _sha(train_path)


def test_spaced_views_build_phase_d_with_metrics(tmp_path):
    config = _config(tmp_path, view="dense", object_size=320, scan_step=5.0, scan_row_spacing=6.0)
    train_path, test_path = store.dataset_paths(config)
    assert train_path.name == "dense_train.npz" and train_path.parent.parent.name == "phase_d"
    phase_c = load_dataset(Path(store.planned_paths(config)["phase_c"]) / "patched_train.npz")
    diameter = physics.footprint_diameter(phase_c.probe)  # S = (1 − f)·D, D measured on the probe
    for view, spacing in (("dense", 0.3 * diameter), ("sparse", 0.8 * diameter)):
        data = load_dataset(train_path.parent / f"{view}_train.npz")
        assert pdist(np.column_stack([data.xcoords, data.ycoords])).min() >= spacing
        assert set(data.scan_index) <= set(phase_c.scan_index)
        position = {int(i): k for k, i in enumerate(phase_c.scan_index)}
        rows = [position[int(i)] for i in data.scan_index]
        np.testing.assert_array_equal(data.diffraction, phase_c.diffraction[rows])
        meta = data.metadata
        assert meta["phase"] == "D" and meta["view"] == view and meta["spacing_threshold_px"] == pytest.approx(spacing)
        assert meta["n_accepted"] == data.n and meta["n_candidates"] == phase_c.n
        assert meta["acceptance_rate"] == pytest.approx(data.n / phase_c.n)
        assert meta["photon_scale"] == phase_c.metadata["photon_scale"]
        metrics = json.loads((train_path.parent / f"{view}_train_metrics.json").read_text())
        assert metrics["probe_diameter_px"] == pytest.approx(diameter) and metrics["n_accepted"] == data.n
        assert meta["probe_diameter_px"] == pytest.approx(diameter)
        assert metrics["measured"]["min_spacing_px"] >= spacing
        nearest = overlap_metrics(data.xcoords, data.ycoords, diameter, 1)["mean_overlap_fraction"]
        assert metrics["nearest_overlap_fraction"] == pytest.approx(nearest)
        assert metrics["overlap_fraction"] == {"dense": 0.7, "sparse": 0.2}[view]
    assert [b["unit"] for b in _builds(config)] == ["phase_c/dose_1000", "phase_d/dose_1000"]
    # the other views of the same dose are now found, not rebuilt
    store.dataset_paths(dataclasses.replace(config, view="sparse"))
    store.dataset_paths(dataclasses.replace(config, view="baseline"))
    assert len(_builds(config)) == 2


def test_same_config_gives_the_same_bytes_and_another_seed_other_data(tmp_path):
    a = store.dataset_paths(_config(tmp_path, cache="a"))
    b = store.dataset_paths(_config(tmp_path, cache="b"))
    assert [_sha(p) for p in a] == [_sha(p) for p in b]
    c = store.dataset_paths(_config(tmp_path, cache="a", simulation_seed=7))
    assert c[0].parents[2] != a[0].parents[2]  # another entry key
    assert not np.array_equal(load_dataset(a[0]).xcoords, load_dataset(c[0]).xcoords)
    d = store.dataset_paths(_config(tmp_path, cache="a", dose=1e4))
    assert d[0].parents[2] == a[0].parents[2] and d[0].parent.name == "dose_10000"
    low, high = load_dataset(a[0]), load_dataset(d[0])
    np.testing.assert_array_equal(low.xcoords, high.xcoords)  # same positions, only the noise differs
    assert not np.array_equal(low.diffraction, high.diffraction)


def test_prepare_dose_builds_everything_once(tmp_path):
    config = _config(tmp_path, object_size=256)
    paths = store.prepare_dose(config)
    files = [paths["phase_c"]["train"], paths["phase_c"]["test"]]
    for view in ("dense", "sparse"):
        files += [paths["phase_d"][view][key] for key in ("train", "test", "train_metrics", "test_metrics")]
    assert all(Path(f).is_file() for f in files)
    json.dumps(paths)  # JSON-ready
    store.prepare_dose(config)
    assert len(_builds(config)) == 2


def test_a_corrupt_or_partial_entry_is_rebuilt(tmp_path, caplog):
    config = _config(tmp_path)
    train_path, _ = store.dataset_paths(config)
    original = train_path.read_bytes()
    corrupted = bytearray(original)
    corrupted[len(corrupted) // 2] ^= 0xFF  # same size, different content
    train_path.write_bytes(bytes(corrupted))
    with caplog.at_level("WARNING"):
        store.dataset_paths(config)
    assert "does not match its SHA-256" in caplog.text
    assert train_path.read_bytes() == original
    (train_path.parent / "complete.json").unlink()  # a build killed before its marker
    stale = train_path.parent.parent / ".tmp-dose_1000-leftover"
    stale.mkdir()
    store.dataset_paths(config)
    assert train_path.read_bytes() == original and not stale.exists()
    assert len(_builds(config)) == 3


def _build_in_another_process(config, barrier, results):
    """Spawned worker: widen the race window, wait for the other worker, ask for the data."""
    import time

    from fly64_train.data import simulate as sim
    from fly64_train.data import store as data_store

    original = sim.far_field

    def slow_far_field(*args, **kwargs):
        time.sleep(1.0)
        return original(*args, **kwargs)

    sim.far_field = slow_far_field
    barrier.wait()
    train, test = data_store.dataset_paths(config)
    results.put((str(train), str(test), hashlib.sha256(Path(train).read_bytes()).hexdigest()))


def test_two_processes_asking_at_once_build_once_and_both_get_the_complete_entry(tmp_path):
    config = _config(tmp_path, view="dense")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_build_in_another_process, args=(config, barrier, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert answers[0] == answers[1]
    assert sorted(b["unit"] for b in _builds(config)) == ["phase_c/dose_1000", "phase_d/dose_1000"]
    assert store.planned_paths(config)["exists"]
    assert answers[0][2] == _sha(answers[0][0])


def test_npz_source_validates_and_returns_the_users_files(tmp_path):
    built = store.dataset_paths(_config(tmp_path))
    user = TrainingConfig(dataset=DatasetConfig(source="npz", train_path=str(built[0]), test_path=str(built[1])))
    before = [_sha(p) for p in built]
    assert store.dataset_paths(user) == (built[0], built[1])
    assert [_sha(p) for p in built] == before  # never modified
    plan = store.planned_paths(user)
    assert plan["exists"] and plan["cache_entry"] is None and plan["train"] == str(built[0])
    assert store.prepare_dose(user)["train"] == str(built[0])
    wrong_n = dataclasses.replace(user, model=dataclasses.replace(user.model, N=128))
    with pytest.raises(ContractError, match="model.N=128"):
        store.dataset_paths(wrong_n)
    bad = tmp_path / "bad.npz"
    np.savez(bad, diffraction=np.ones((2, 64, 64), np.float32))
    with pytest.raises(ContractError, match="bad.npz"):
        store.dataset_paths(dataclasses.replace(user, dataset=dataclasses.replace(user.dataset, test_path=str(bad))))
    for key in ("train_path", "test_path"):  # a missing file names the setting to fix
        dataset = dataclasses.replace(user.dataset, **{key: str(tmp_path / "no.npz")})
        missing = dataclasses.replace(user, dataset=dataset)
        with pytest.raises(ContractError, match=rf"^{tmp_path / 'no.npz'}: dataset.{key} file not found \(expected"):
            store.dataset_paths(missing)


def test_user_probe_and_object_files_replace_the_synthetic_ones(tmp_path):
    probe = simulate.make_probe(64) * np.complex64(0.5j)
    probe_file = tmp_path / "probe.npz"
    np.savez(probe_file, probeGuess=probe)
    obj = simulate.make_object(200, seed=9)
    object_file = tmp_path / "object.npz"
    np.savez(object_file, objectGuess=obj)
    config = _config(tmp_path, probe_path=str(probe_file), object_path=str(object_file))
    train_path, _ = store.dataset_paths(config)
    data = load_dataset(train_path)
    np.testing.assert_array_equal(data.probe, probe)
    np.testing.assert_array_equal(data.obj, obj)
    assert data.metadata["probe"]["source"] == str(probe_file.resolve())
    assert store.planned_paths(config)["key"] != store.planned_paths(_config(tmp_path))["key"]
    np.savez(probe_file, probeGuess=probe[:32, :32])  # content changed → another entry, and it is checked
    with pytest.raises(ContractError, match=r"probe.npz.*\(64, 64\)"):
        store.dataset_paths(config)
    with pytest.raises(ContractError, match="not found"):
        store.planned_paths(_config(tmp_path, probe_path=str(tmp_path / "missing.npz")))
    tiny = tmp_path / "tiny.npz"
    np.savez(tiny, objectGuess=obj[:50, :50])
    with pytest.raises(ContractError, match="tiny.npz.*too small"):
        store.dataset_paths(_config(tmp_path, object_path=str(tiny)))


@pytest.mark.slow  # builds the full default dataset (24,676 positions)
def test_default_dataset_views_are_large_enough(tmp_path):
    config = TrainingConfig(dataset=DatasetConfig(cache_dir=str(tmp_path / "cache")))
    paths = store.prepare_dose(config)
    sizes = {}
    for view in ("dense", "sparse"):
        for split in ("train", "test"):
            metrics = json.loads(Path(paths["phase_d"][view][f"{split}_metrics"]).read_text())
            sizes[view, split] = metrics["n_accepted"]
            assert metrics["measured"]["min_spacing_px"] >= metrics["spacing_threshold_px"]
            overlap = metrics["nearest_overlap_fraction"]
            assert (0.5 <= overlap <= 0.65) if view == "dense" else (overlap <= 0.12), (view, split, overlap)
    assert min(sizes["sparse", s] for s in ("train", "test")) >= 150, sizes
    assert min(sizes["dense", s] for s in ("train", "test")) >= 1000, sizes
    train = load_dataset(paths["phase_c"]["train"])
    assert train.obj.shape == (660, 660) and train.N == 64
    assert train.metadata["n_positions"] <= 25_000
    geometry = store.view_geometry(config, paths)
    assert geometry["dense"]["test"]["n_accepted"] == sizes["dense", "test"]
    assert geometry["dense"]["test"]["probe_diameter_px"] == pytest.approx(0.6 * 64, rel=0.05)


def test_a_complete_entry_is_used_without_locking_or_writing(tmp_path, monkeypatch):
    config = _config(tmp_path, view="sparse")
    paths = store.dataset_paths(config)
    before = sorted(p for p in (tmp_path / "cache").rglob("*"))

    def no_lock(*args, **kwargs):
        raise AssertionError("a complete entry must not need its lock (read-only caches work)")

    monkeypatch.setattr(cache, "FileLock", no_lock)
    assert store.dataset_paths(config) == paths
    assert store.dataset_paths(dataclasses.replace(config, view="baseline"))[0].name == "patched_train.npz"
    assert sorted(p for p in (tmp_path / "cache").rglob("*")) == before


def test_cache_written_by_an_earlier_format_is_never_read_as_todays_data(tmp_path):
    config = _config(tmp_path)
    train_path, _ = store.dataset_paths(config)
    unit = train_path.parent
    marker = json.loads((unit / cache.MARKER).read_text())
    marker["format_version"] = recipe.FORMAT_VERSION - 1  # as written by the random-scan version
    (unit / cache.MARKER).write_text(json.dumps(marker))
    plan = recipe.StudyRecipe(config)
    complete, why = plan.cache.check(unit, plan.phase_c_key(config.dose))
    assert not complete and "stale" in why
    store.dataset_paths(config)  # rebuilt, not read
    assert len(_builds(config)) == 2
    # and every field that shapes the data is in the entry key
    keys = {store.planned_paths(_config(tmp_path, **change))["key"]
            for change in ({}, {"object_kind": "random"}, {"scan_step": 7.0}, {"scan_row_spacing": 9.0},
                           {"scan_jitter": 0.0}, {"object_size": 200})}
    assert len(keys) == 6


def test_extra_training_tiles_add_content_to_the_training_split_only(tmp_path):
    plain = _config(tmp_path, view="dense", cache="plain", object_size=256, scan_step=6.0, scan_row_spacing=8.0)
    tiled = _config(tmp_path, view="dense", cache="tiled", object_size=256, scan_step=6.0, scan_row_spacing=8.0,
                    extra_train_tiles=2)
    plain_paths, tiled_paths = store.dataset_paths(plain), store.dataset_paths(tiled)
    assert plain_paths[0].parents[2].name != tiled_paths[0].parents[2].name  # the tiles are in the cache key
    # The test split (positions, noise, object) is the one without tiles, bit for bit.
    test_plain, test_tiled = load_dataset(plain_paths[1]), load_dataset(tiled_paths[1])
    for field in ("diffraction", "xcoords", "ycoords", "obj", "probe", "scan_index"):
        np.testing.assert_array_equal(getattr(test_tiled, field), getattr(test_plain, field))
    assert "extra_train_tiles" not in test_tiled.metadata
    phase_c = {name: load_dataset(Path(store.planned_paths(config)["phase_c"]) / "patched_train.npz")
               for name, config in (("plain", plain), ("tiled", tiled))}
    before, after = phase_c["plain"], phase_c["tiled"]
    n = before.n
    np.testing.assert_array_equal(after.diffraction[:n], before.diffraction)  # the study's own train part kept
    np.testing.assert_array_equal(after.obj[:, :256], before.obj)
    # two tiles, each a whole scan of its own picture pair, to the right of the study object
    assert after.obj.shape == (256, 3 * 256)
    tiles = after.metadata["extra_train_tiles"]
    assert [tile["columns"] for tile in tiles["tiles"]] == [[256, 512], [512, 768]]
    assert tiles["tiles"][0]["amplitude_image"] == f"skimage.data.{study.TILE_PICTURES[0][0]}"
    n_tile = simulate.fly_scan_positions((256, 256), 64, 6.0, 8.0, 0.5, 0)[0].size
    assert after.n - n == tiles["n_positions"] == 2 * n_tile
    extra_x, extra_y = after.xcoords[n:], after.ycoords[n:]
    for j, (left, right) in enumerate(tile["columns"] for tile in tiles["tiles"]):
        inside = (extra_x >= left + 32) & (extra_x <= right - 1 - 32)  # N/2 inside the tile: no mixed pattern
        assert inside.sum() == n_tile
    assert extra_y.max() > before.ycoords.max()  # the tiles are scanned whole (both halves)
    np.testing.assert_array_equal(after.scan_index[n:], before.metadata["n_positions"] + np.arange(after.n - n))
    # Same beam: the photon scale is the study scan's; the tiles' patterns obey the same counts rule.
    assert after.metadata["photon_scale"] == before.metadata["photon_scale"]
    counts = (after.diffraction[n:].astype(np.float64) * after.metadata["photon_scale"]) ** 2
    np.testing.assert_allclose(counts, np.round(counts), atol=0.01)
    assert counts.sum(axis=(1, 2)).mean() == pytest.approx(tiles["mean_counts_per_pattern"], rel=1e-5)
    # A tile's patterns are its picture pair's forward model with Poisson counts: variance = mean.
    rows = n + np.arange(0, after.n - n, 37)
    patches = physics.extract_patches(after.obj, after.xcoords[rows], after.ycoords[rows], 64)
    first_tile = after.xcoords[rows] < 512
    tile_patches = physics.extract_patches(simulate.make_picture_object(256, *study.TILE_PICTURES[0]),
                                           after.xcoords[rows][first_tile] - 256, after.ycoords[rows][first_tile], 64)
    np.testing.assert_array_equal(patches[first_tile], tile_patches)
    scale = after.metadata["photon_scale"]
    expected = (physics.far_field_amplitude(physics.illuminate(patches, after.probe)).astype(np.float64) * scale) ** 2
    observed = (after.diffraction[rows].astype(np.float64) * scale) ** 2
    assert observed.sum() == pytest.approx(expected.sum(), rel=0.01)
    assert ((observed - expected) ** 2).sum() / expected.sum() == pytest.approx(1.0, abs=0.05)
    # The dense view keeps the tiles' positions apart from each other's and from the study object's.
    view = load_dataset(tiled_paths[0])
    spacing = view.metadata["spacing_threshold_px"]
    assert pdist(np.column_stack([view.xcoords, view.ycoords])).min() >= spacing
    assert view.n > 2 * load_dataset(plain_paths[0]).n
    # The same config gives the same bytes.
    again = store.dataset_paths(_config(tmp_path, view="dense", cache="again", object_size=256, scan_step=6.0,
                                        scan_row_spacing=8.0, extra_train_tiles=2))
    assert [_sha(p) for p in again] == [_sha(p) for p in tiled_paths]


def test_random_tiles_are_seeded_and_user_objects_cannot_take_tiles(tmp_path):
    first = simulate.make_training_tiles(64, 7, "random", 2)
    again = simulate.make_training_tiles(64, 7, "random", 2)
    other = simulate.make_training_tiles(64, 8, "random", 2)
    np.testing.assert_array_equal(first[1][0], again[1][0])
    assert not np.array_equal(first[0][0], first[1][0]) and not np.array_equal(first[0][0], other[0][0])
    with pytest.raises(ValueError, match="picture pairs"):
        simulate.make_training_tiles(64, 7, "images", len(study.TILE_PICTURES) + 1)
    obj_path = tmp_path / "object.npz"
    np.savez(obj_path, objectGuess=np.ones((192, 192), np.complex64))
    with pytest.raises(ContractError, match="extra_train_tiles"):
        store.dataset_paths(_config(tmp_path, object_path=str(obj_path), extra_train_tiles=1))
