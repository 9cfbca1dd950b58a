"""Job records: the names of training_manifest.json and skip_summary.json, timestamps and the
versions a job ran with. The files are written with `files.write_json` (atomic)."""
from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone


TRAINING_MANIFEST = "training_manifest.json"
SKIP_SUMMARY = "skip_summary.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def runtime_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Python, platform and the versions of the libraries a job's results depend on."""
    from importlib import metadata

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("fly64-train", "numpy", "scipy", "hydra-core", "omegaconf", "h5py", "scikit-image"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    versions.update(extra or {})
    return versions
