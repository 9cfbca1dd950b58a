"""From a dataset to model inputs: the normalisation the training split fixes for every split."""
from __future__ import annotations

import numpy as np
import pytest

from fly64_train.data.contract import StudyData
from fly64_train.inputs import model_inputs


def dataset(scale: float, n: int = 40, N: int = 64) -> StudyData:
    rng = np.random.default_rng(1)
    xy = rng.uniform(40, 80, size=(2, n))
    return StudyData(diffraction=(scale * rng.random((n, N, N))).astype(np.float32), xcoords=xy[0], ycoords=xy[1],
                     probe=np.ones((N, N), np.complex64), obj=np.ones((128, 128), np.complex64))


def test_training_split_fixes_the_normalisation_of_every_split():
    train = model_inputs(dataset(1.0), gridsize=1, neighbor_count=7, seed=0)
    # training data: mean total intensity per pattern (N/2)²
    assert np.mean(np.sum(train.x.astype(np.float64) ** 2, axis=(1, 2, 3))) == pytest.approx(32.0**2, rel=1e-5)
    # a split with twice the counts' amplitude keeps them: its inputs are twice the training inputs
    brighter = model_inputs(dataset(2.0), gridsize=1, neighbor_count=7, seed=0, norm=train.norm)
    assert brighter.norm == train.norm
    np.testing.assert_allclose(brighter.x, 2 * train.x, rtol=1e-6)
    # its own normalisation would have hidden the difference
    own = model_inputs(dataset(2.0), gridsize=1, neighbor_count=7, seed=0)
    np.testing.assert_allclose(own.x, train.x, rtol=1e-5)


@pytest.mark.parametrize("norm", [0.0, -1.0, float("nan"), float("inf")])
def test_a_bad_normalisation_is_refused(norm):
    with pytest.raises(ValueError, match="normalisation must be a positive number"):
        model_inputs(dataset(1.0), gridsize=1, neighbor_count=7, seed=0, norm=norm)
