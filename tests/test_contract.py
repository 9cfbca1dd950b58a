"""The NPZ data contract: round trip, the original's layout, and every failure class."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from fly64_train.data.contract import ContractError, StudyData, load_array, load_dataset, save_dataset


def _arrays(n=6, N=8, M=40, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "diffraction": rng.random((n, N, N)).astype(np.float32),
        "xcoords": rng.uniform(N, M - N, n),
        "ycoords": rng.uniform(N, M - N, n),
        "probeGuess": (rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64),
        "objectGuess": (rng.random((M, M)) + 1j * rng.random((M, M))).astype(np.complex64),
    }


def _write(tmp_path: Path, name="data.npz", **changes) -> Path:
    arrays = _arrays()
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _study(seed=0) -> StudyData:
    a = _arrays(seed=seed)
    return StudyData(a["diffraction"], a["xcoords"], a["ycoords"], a["probeGuess"], a["objectGuess"],
                     metadata={"dose": 1000.0, "nested": {"a": [1, 2]}}, scan_index=np.arange(6) * 2)


def test_round_trip_keeps_arrays_dtypes_and_metadata(tmp_path):
    data = _study()
    path = tmp_path / "out.npz"
    save_dataset(path, data)
    loaded = load_dataset(path)
    for field in ("diffraction", "xcoords", "ycoords", "probe", "obj", "scan_index"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(data, field))
    assert loaded.diffraction.dtype == np.float32 and loaded.probe.dtype == np.complex64
    assert loaded.obj.dtype == np.complex64 and loaded.xcoords.dtype == np.float64
    assert loaded.metadata == {"dose": 1000.0, "nested": {"a": [1, 2]}}
    assert loaded.path == path and loaded.N == 8 and loaded.n == 6
    with np.load(path) as archive:  # canonical keys, plain arrays, metadata a JSON string
        assert {"diffraction", "xcoords", "ycoords", "xcoords_start", "ycoords_start", "probeGuess",
                "objectGuess", "_metadata"} <= set(archive.files)
        assert archive["_metadata"].dtype.kind == "U" and archive["_metadata"].ndim == 0
        np.testing.assert_array_equal(archive["xcoords_start"], data.xcoords)
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]  # no temp file left behind


def test_same_data_gives_the_same_bytes(tmp_path):
    save_dataset(tmp_path / "a.npz", _study())
    save_dataset(tmp_path / "b.npz", _study())
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_invalid_data_is_never_written_and_the_old_file_survives(tmp_path):
    path = tmp_path / "out.npz"
    save_dataset(path, _study())
    before = path.read_bytes()
    bad = _study(seed=1)
    bad.diffraction[0, 0, 0] = np.nan
    with pytest.raises(ContractError, match="being written"):
        save_dataset(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


def test_original_layout_diff3d_legacy_transpose_extra_keys_and_pickled_metadata(tmp_path):
    a = _arrays(n=20, N=8)  # n > N: the original's shape[0] < shape[2] rule applies
    legacy = np.moveaxis(a["diffraction"], 0, -1)  # (N, N, n)
    path = tmp_path / "legacy.npz"
    np.savez(path, diff3d=legacy, xcoords=a["xcoords"], ycoords=a["ycoords"], xcoords_start=a["xcoords"],
             ycoords_start=a["ycoords"], probeGuess=a["probeGuess"], objectGuess=a["objectGuess"],
             scan_index=np.zeros(20, dtype=np.int64), Y=np.ones((1, 8, 8, 1), np.complex64),
             _metadata=np.array({"pickled": True}, dtype=object), allow_pickle=True)
    with pytest.warns(UserWarning, match=r"_metadata"):
        data = load_dataset(path)
    np.testing.assert_array_equal(data.diffraction, a["diffraction"])
    assert data.metadata.get("loaded_from_key") == "diff3d"
    assert data.n == 20 and data.N == 8


def test_few_patterns_are_not_mistaken_for_the_legacy_layout(tmp_path):
    a = _arrays(n=3, N=8)  # n < N: (3, 8, 8) is canonical even though shape[0] < shape[2]
    path = tmp_path / "few.npz"
    np.savez(path, **a)
    np.testing.assert_array_equal(load_dataset(path).diffraction, a["diffraction"])


class _NotImportable:
    pass


def test_pickled_arrays_are_skipped_with_a_warning_and_never_unpickled(tmp_path):
    a = _arrays()
    obj_array = np.empty(1, dtype=object)
    obj_array[0] = _NotImportable()
    path = tmp_path / "pickled.npz"
    np.savez(path, **a, extra=obj_array, allow_pickle=True)
    _NotImportable.__module__ = "no_such_module_anywhere"  # unpickling it would now fail loudly
    with pytest.warns(UserWarning, match=r"skipped pickled .*'extra'"):
        data = load_dataset(path)
    assert data.n == 6


def _assert_error(path: Path, *fragments: str) -> str:
    with pytest.raises(ContractError) as info:
        load_dataset(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_key(tmp_path):
    _assert_error(_write(tmp_path, probeGuess=None), "'probeGuess'", "expected the required keys", "found only")
    _assert_error(_write(tmp_path, "b.npz", diffraction=None), "'diffraction'", "diff3d")


@pytest.mark.parametrize("key, value, fragments", [
    ("diffraction", np.ones((6, 8, 8), np.uint16), ("'diffraction'", "amplitude", "float32", "uint16")),
    ("diffraction", np.ones((6, 8, 8), np.complex64), ("'diffraction'", "real floating", "complex64")),
    ("probeGuess", np.ones((8, 8), np.float32), ("'probeGuess'", "complex", "float32")),
    ("objectGuess", np.ones((40, 40), np.float64), ("'objectGuess'", "complex", "float64")),
    ("xcoords", np.arange(6), ("'xcoords'", "floating", "int64")),
])
def test_wrong_dtype(tmp_path, key, value, fragments):
    _assert_error(_write(tmp_path, **{key: value}), *fragments)


def test_uint16_diff3d_intensity_is_rejected_with_the_fix(tmp_path):
    a = _arrays()
    path = tmp_path / "raw.npz"
    np.savez(path, diff3d=np.ones((6, 8, 8), np.uint16), **{k: v for k, v in a.items() if k != "diffraction"})
    _assert_error(path, "'diff3d'", "sqrt(counts)", "uint16")


@pytest.mark.parametrize("key, value, fragments", [
    ("probeGuess", np.ones((16, 16), np.complex64), ("'probeGuess'", "(8, 8)", "(16, 16)")),
    ("xcoords", np.full(5, 20.0), ("'xcoords'", "(6,)", "(5,)")),
    ("ycoords", np.full((6, 1), 20.0), ("'ycoords'", "(6,)", "(6, 1)")),
    ("diffraction", np.ones((6, 8, 9), np.float32), ("'diffraction'", "square", "8×9")),
    ("diffraction", np.ones((6, 64), np.float32), ("'diffraction'", "3-D", "(6, 64)")),
    ("objectGuess", np.ones(40, np.complex64), ("'objectGuess'", "2-D", "(40,)")),
])
def test_shape_mismatch(tmp_path, key, value, fragments):
    _assert_error(_write(tmp_path, **{key: value}), *fragments)


def test_nan_and_inf(tmp_path):
    a = _arrays()
    a["diffraction"][2, 3, 4] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, **a)
    _assert_error(path, "'diffraction'", "finite", "1 NaN/inf", "(2, 3, 4)")
    a = _arrays()
    a["probeGuess"][1, 1] = complex(0, np.inf)
    np.savez(path, **a)
    _assert_error(path, "'probeGuess'", "finite")
    a = _arrays()
    a["ycoords"][0] = np.nan
    np.savez(path, **a)
    _assert_error(path, "'ycoords'", "finite")


def test_negative_amplitude(tmp_path):
    a = _arrays()
    a["diffraction"][4, 0, 0] = -0.5
    path = tmp_path / "neg.npz"
    np.savez(path, **a)
    _assert_error(path, "'diffraction'", "≥ 0", "-0.5", "pattern 4")


def test_positions_outside_the_object(tmp_path):
    a = _arrays()
    a["xcoords"][3] = 40.5  # object is 40 wide: columns 0..39
    path = tmp_path / "out.npz"
    np.savez(path, **a)
    _assert_error(path, "'xcoords'", "inside the object", "index 3", "40.5")
    a = _arrays()
    a["ycoords"][0] = -1.0
    np.savez(path, **a)
    _assert_error(path, "'ycoords'", "inside the object")


def test_missing_file(tmp_path):
    _assert_error(tmp_path / "nope.npz", "not found")


def test_corrupt_and_truncated_files(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(os.urandom(2000))
    _assert_error(garbage, "expected")
    path = _write(tmp_path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _assert_error(truncated, "corrupt or truncated")
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    _assert_error(single, "NPZ archive")


def test_metadata_must_be_a_json_object(tmp_path):
    _assert_error(_write(tmp_path, _metadata=np.array("{not json")), "'_metadata'", "JSON")
    _assert_error(_write(tmp_path, "b.npz", _metadata=np.array("[1, 2]")), "'_metadata'", "JSON object")
    path = _write(tmp_path, "c.npz", _metadata=np.array(json.dumps({"dose": 10})))
    assert load_dataset(path).metadata == {"dose": 10}


def test_load_array_for_user_probe_and_object(tmp_path):
    a = _arrays()
    path = tmp_path / "probe.npz"
    np.savez(path, probe=a["probeGuess"].astype(np.complex128))
    probe = load_array(path, ("probeGuess", "probe"), "the probe")
    assert probe.dtype == np.complex64 and probe.shape == (8, 8)
    with pytest.raises(ContractError, match="objectGuess"):
        load_array(path, ("objectGuess",), "the object")
    np.savez(path, probeGuess=np.ones((8, 8)))
    with pytest.raises(ContractError, match="complex"):
        load_array(path, ("probeGuess",), "the probe")
