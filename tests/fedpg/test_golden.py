"""Training stays bit-identical to values recorded before the round/learner refactor (``tests/data/record_golden.py``)."""

import importlib.util
import pathlib

import numpy as np
import pytest

DATA = pathlib.Path(__file__).parents[1] / "data"


def _recorder():
    spec = importlib.util.spec_from_file_location("record_golden", DATA / "record_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["demo", "gpomdp", "fedavg_partial"])
def test_same_seed_same_parameters_as_recorded(name):
    golden = np.load(DATA / "golden_params.npz")
    got = _recorder().run(name)
    for key, value in got.items():
        np.testing.assert_array_equal(value, golden[key], err_msg=f"{key} differs from the recorded reference")
