"""model_type=supervised: the true patches a supervised job trains on come from the data's object at the
members' positions; data without a real truth is a clear error."""
from __future__ import annotations

import numpy as np
import pytest

from fly64_train import physics
from fly64_train.data.contract import StudyData
from fly64_train.inputs import model_inputs
from fly64_train.runner import true_patches


def study_data(obj: np.ndarray, n: int = 12, N: int = 64) -> StudyData:
    rng = np.random.default_rng(0)
    xy = rng.uniform(N, obj.shape[0] - N, size=(n, 2))
    return StudyData(diffraction=rng.uniform(0.1, 1, (n, N, N)).astype(np.float32), xcoords=xy[:, 0],
                     ycoords=xy[:, 1], probe=np.ones((N, N), np.complex64), obj=obj)


def test_true_patches_are_the_objects_patches_at_every_members_position():
    rng = np.random.default_rng(1)
    obj = (rng.uniform(0.3, 1, (200, 200)) * np.exp(1j * rng.uniform(-1, 1, (200, 200)))).astype(np.complex64)
    data = study_data(obj)
    inputs = model_inputs(data, gridsize=2, neighbor_count=6, seed=3)
    batch = np.array([4, 0, 7])
    patches = true_patches(data, inputs)(batch)
    assert patches.shape == (3, 4, 64, 64) and patches.dtype == np.complex64
    xy = inputs.positions[batch].reshape(-1, 2)
    expected = physics.extract_patches(obj, xy[:, 0], xy[:, 1], 64).reshape(3, 4, 64, 64)
    np.testing.assert_allclose(patches, expected, atol=1e-6)


def test_a_placeholder_object_is_a_clear_error():
    data = study_data(np.ones((200, 200), np.complex64))
    inputs = model_inputs(data, gridsize=1, neighbor_count=1, seed=3)
    with pytest.raises(ValueError, match="objectGuess of .* is constant.*model_type=pinn"):
        true_patches(data, inputs)
