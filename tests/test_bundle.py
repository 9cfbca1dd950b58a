"""wts.h5.zip: exact round trip, deterministic bytes, fixed timestamps, clear errors, atomic writes."""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fly64_train import bundle, files
from fly64_train.architecture import Geometry
from fly64_train.bundle import BundleError, read_bundle, verify_against_manifest, write_bundle
from fly64_train.files import sha256_file

GEOMETRY = Geometry(N=64, gridsize=2, n_filters_scale=1, object_big=True, probe_big=True,
                    amp_activation="sigmoid", padded_size=80)


def make_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in GEOMETRY.parameter_shapes().items():
        if name == "probe":
            weights[name] = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
        else:
            weights[name] = rng.normal(size=shape).astype(np.float32)
    return weights


MANIFEST = {"backend": "pytorch", "framework_versions": {"torch": "2.13.0"}, "intensity_scale": 123.5,
            "diffraction_norm": 0.0421, "geometry": GEOMETRY.to_dict(), "legacy_params": {"N": 64, "gridsize": 2, "nphotons": 1e3},
            "config": {"dose": 1000.0, "view": "dense"}}


@pytest.fixture(scope="module")
def weights():
    return make_weights()


@pytest.fixture
def written(tmp_path, weights):
    return write_bundle(tmp_path / "wts.h5.zip", weights, MANIFEST)


def test_round_trip_is_exact(written, weights):
    loaded, manifest = read_bundle(written.path, written.sha256, written.size_bytes)
    assert list(loaded) == sorted(weights)
    for name, array in weights.items():
        assert loaded[name].dtype == array.dtype, name
        assert loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)
    assert loaded["probe"].dtype == np.complex64 and np.iscomplexobj(loaded["probe"])
    assert loaded["log_scale"].shape == ()
    assert manifest["format"] == "fly64-bundle" and manifest["format_version"] == 1
    for key, value in MANIFEST.items():
        assert manifest[key] == value
    table = {t["name"]: t for t in manifest["tensors"]}
    assert table["probe"] == {"name": "probe", "shape": [64, 64], "dtype": "complex64"}
    assert table["encoder/block0/conv0/kernel"]["shape"] == [3, 3, 4, 32]


def test_info_and_sha256(written):
    assert written.path.name == "wts.h5.zip"
    assert written.size_bytes == written.path.stat().st_size
    assert written.sha256 == sha256_file(written.path)
    import hashlib
    assert written.sha256 == hashlib.sha256(written.path.read_bytes()).hexdigest()
    assert written.manifest_fields() == {"bundle_sha256": written.sha256, "bundle_size_bytes": written.size_bytes}


def test_two_writes_are_byte_identical(tmp_path, weights):
    first = write_bundle(tmp_path / "a" / "wts.h5.zip", weights, MANIFEST)
    time.sleep(1.05)  # HDF5 object timestamps have one-second resolution
    # Same content, different dict insertion order.
    second = write_bundle(tmp_path / "b" / "wts.h5.zip", dict(reversed(list(weights.items()))),
                          dict(reversed(list(MANIFEST.items()))))
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()
    third = write_bundle(tmp_path / "c" / "wts.h5.zip", make_weights(seed=1), MANIFEST)
    assert third.sha256 != first.sha256


def test_hdf5_bytes_are_deterministic(weights):
    first = bundle.weights_to_h5_bytes(weights)
    time.sleep(1.05)
    assert bundle.weights_to_h5_bytes(weights) == first


def test_zip_layout_has_fixed_metadata(written):
    with zipfile.ZipFile(written.path) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == ["manifest.json", "weights.h5"]
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr == (0o100644 << 16)
            assert info.create_system == 3
        text = archive.read("manifest.json").decode()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def test_manifest_accepts_numpy_values_and_overrides_reserved_keys(tmp_path, weights):
    manifest = {"intensity_scale": np.float32(2.5), "offsets": np.arange(3), "format": "other",
                "format_version": 99, "tensors": "ignored", "run_dir": tmp_path}
    info = write_bundle(tmp_path / "wts.h5.zip", weights, manifest)
    _, read = read_bundle(info.path)
    assert read["intensity_scale"] == 2.5 and read["offsets"] == [0, 1, 2]
    assert read["format"] == "fly64-bundle" and read["format_version"] == 1
    assert read["run_dir"] == str(tmp_path)


def test_bad_inputs_to_write(tmp_path, weights):
    with pytest.raises(BundleError, match="empty"):
        write_bundle(tmp_path / "w.zip", {}, MANIFEST)
    with pytest.raises(BundleError, match="valid path"):
        write_bundle(tmp_path / "w.zip", {"a//b": np.zeros(1)}, MANIFEST)
    with pytest.raises(BundleError, match="also a group"):
        write_bundle(tmp_path / "w.zip", {"a": np.zeros(1), "a/b": np.zeros(1)}, MANIFEST)
    with pytest.raises(BundleError, match="JSON"):
        write_bundle(tmp_path / "w.zip", weights, {"x": object()})
    with pytest.raises(BundleError, match="JSON"):
        write_bundle(tmp_path / "w.zip", weights, {"x": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_no_temporary_files(tmp_path, weights, monkeypatch):
    target = tmp_path / "wts.h5.zip"
    write_bundle(target, weights, MANIFEST)
    original = target.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wts.h5.zip"]

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_bundle(target, make_weights(seed=3), MANIFEST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wts.h5.zip"]
    assert target.read_bytes() == original  # the old bundle is untouched


# ----------------------------------------------------------------------------- corrupt bundles

def test_missing_file(tmp_path):
    with pytest.raises(BundleError, match=r"nope\.zip does not exist"):
        read_bundle(tmp_path / "nope.zip")


def test_not_a_zip(tmp_path):
    path = tmp_path / "wts.h5.zip"
    path.write_text("hello")
    with pytest.raises(BundleError, match="not a readable zip") as err:
        read_bundle(path)
    assert str(path) in str(err.value)


def test_truncated(written):
    data = written.path.read_bytes()
    written.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="not a readable zip"):
        read_bundle(written.path)
    with pytest.raises(BundleError, match="expected"):
        read_bundle(written.path, expected_size=written.size_bytes)


def _rewrite(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_missing_member(written):
    members = _members(written.path)
    del members["weights.h5"]
    _rewrite(written.path, members)
    with pytest.raises(BundleError, match=r"lacks member\(s\) \['weights.h5'\]"):
        read_bundle(written.path)


def test_bad_json(written):
    members = _members(written.path)
    members["manifest.json"] = b"{not json"
    _rewrite(written.path, members)
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        read_bundle(written.path)


@pytest.mark.parametrize("key, value, message", [
    ("format_version", 2, "format_version 2; this fly64-train reads format_version 1"),
    ("format", "keras", "format 'keras'; expected 'fly64-bundle'"),
    ("tensors", "x", "'tensors' must be"),
])
def test_bad_manifest_fields(written, key, value, message):
    members = _members(written.path)
    manifest = json.loads(members["manifest.json"])
    manifest[key] = value
    members["manifest.json"] = json.dumps(manifest).encode()
    _rewrite(written.path, members)
    with pytest.raises(BundleError, match=message):
        read_bundle(written.path)


def test_manifest_tensor_missing_or_misshapen_in_weights(written):
    members = _members(written.path)
    manifest = json.loads(members["manifest.json"])
    manifest["tensors"].append({"name": "extra/kernel", "shape": [1], "dtype": "float32"})
    members["manifest.json"] = json.dumps(manifest).encode()
    _rewrite(written.path, members)
    with pytest.raises(BundleError, match=r"lacks tensor\(s\) \['extra/kernel'\]"):
        read_bundle(written.path)

    manifest["tensors"].pop()
    probe = next(t for t in manifest["tensors"] if t["name"] == "probe")
    probe["shape"] = [32, 32]
    members["manifest.json"] = json.dumps(manifest).encode()
    _rewrite(written.path, members)
    with pytest.raises(BundleError, match=r"tensor 'probe' is complex64\[64, 64\]; manifest.json lists complex64\[32, 32\]"):
        read_bundle(written.path)


def test_unlisted_tensor_in_weights(tmp_path, weights):
    info = write_bundle(tmp_path / "wts.h5.zip", weights, MANIFEST)
    members = _members(info.path)
    members["weights.h5"] = bundle.weights_to_h5_bytes({**weights, "stray": np.zeros(2, np.float32)})
    _rewrite(info.path, members)
    with pytest.raises(BundleError, match=r"holds tensor\(s\) \['stray'\] not listed"):
        read_bundle(info.path)


def test_weights_not_hdf5(written):
    members = _members(written.path)
    members["weights.h5"] = b"garbage" * 10
    _rewrite(written.path, members)
    with pytest.raises(BundleError, match="weights.h5 is not a readable HDF5"):
        read_bundle(written.path)


def test_edited_weights_fail_the_checksum(written, weights):
    data = bytearray(written.path.read_bytes())
    start = data.find(weights["probe"].tobytes()[:16])
    assert start > 0
    data[start] ^= 0xFF  # same size, one flipped byte inside the stored probe
    written.path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256 .* expected .*changed") as err:
        read_bundle(written.path, expected_sha256=written.sha256, expected_size=written.size_bytes)
    assert str(written.path) in str(err.value)
    with pytest.raises(BundleError):  # the zip CRC catches it even without a recorded checksum
        read_bundle(written.path)
    with pytest.raises(BundleError, match="SHA-256"):
        verify_against_manifest(written.path, written.manifest_fields())


def test_verify_against_manifest(written):
    info = verify_against_manifest(written.path, {"status": "ok", **written.manifest_fields()})
    assert info.sha256 == written.sha256 and info.size_bytes == written.size_bytes
    with pytest.raises(BundleError, match="bundle_sha256"):
        verify_against_manifest(written.path, {"bundle_size_bytes": written.size_bytes})
    with pytest.raises(BundleError, match="bytes; expected"):
        verify_against_manifest(written.path, {"bundle_sha256": written.sha256,
                                               "bundle_size_bytes": written.size_bytes + 1})
    with pytest.raises(BundleError, match="does not exist"):
        verify_against_manifest(written.path.with_name("gone.zip"), written.manifest_fields())


def test_the_diffraction_norm_is_a_field_of_the_manifest_and_a_bundle_without_it_a_clear_error(written, tmp_path,
                                                                                               weights):
    from fly64_train.bundle import diffraction_norm

    _, manifest = read_bundle(written.path)
    assert diffraction_norm(manifest, written.path) == 0.0421
    old = {key: value for key, value in MANIFEST.items() if key != "diffraction_norm"}
    older = write_bundle(tmp_path / "old.zip", weights, old)
    _, manifest = read_bundle(older.path)
    with pytest.raises(BundleError, match=r"old.zip: manifest.json has no valid diffraction_norm \(got None\)"):
        diffraction_norm(manifest, older.path)
    with pytest.raises(BundleError, match="no valid diffraction_norm"):
        diffraction_norm({"diffraction_norm": float("nan")}, written.path)
