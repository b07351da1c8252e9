"""What the Flower server writes is read without unpickling: a weights-only model file and a plain-array checkpoint."""

import pickle

import numpy as np
import pytest
import torch as th

from sb3_fedpg import FederatedPG, FederatedPPO
from sb3_fedpg.common.safe_format import file_kind
from sb3_fedpg.flower.config import parse_run_config
from sb3_fedpg.flower.outputs import ServerOutputs


@pytest.mark.parametrize("algorithm", ["fedpg", "fedppo"])
def test_the_server_writes_weights_only_files(tmp_path, monkeypatch, algorithm):
    config = parse_run_config(
        {"algorithm": algorithm, "output-dir": str(tmp_path / "out"), "net-arch": "8", "n-envs-per-agent": 1}
    )
    outputs = ServerOutputs(config, n_agents=2)
    params = outputs.initial_params() + 0.5
    outputs.save(params, [outputs.initial_params(), params], server_round=1)
    assert outputs.model_path.name == "model.zip" and file_kind(outputs.model_path) == "weights"

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(th, "load", refuse)
    algo = FederatedPPO if algorithm == "fedppo" else FederatedPG
    model = algo.load(outputs.model_path, weights_only=True)
    np.testing.assert_array_equal(model.get_global_parameters().numpy(), params)
    restored, history, rounds = outputs.load_checkpoint()
    np.testing.assert_array_equal(restored, params)
    assert rounds == 1 and len(history) == 2


def test_a_checkpoint_with_a_pickled_array_is_refused(tmp_path):
    config = parse_run_config({"task": "tabular", "output-dir": str(tmp_path / "out")})
    outputs = ServerOutputs(config, n_agents=2)
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    planted = np.array([Payload()], dtype=object)
    np.savez(outputs.checkpoint_path, params=planted, history=planted, round=1, config="{}")
    before = outputs.checkpoint_path.read_bytes()
    with pytest.raises(ValueError, match="holds a pickled object array, which is never unpickled"):
        outputs.load_checkpoint()
    outputs.checkpoint_path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        outputs.load_checkpoint()
    assert not marker.exists() and before


def test_a_checkpoint_with_a_nan_global_policy_is_refused_on_resume(tmp_path):
    config = parse_run_config({"task": "tabular", "output-dir": str(tmp_path / "out"), "resume": True})
    outputs = ServerOutputs(config, n_agents=2)
    params = outputs.initial_params()
    outputs.save(params, [params], 1)
    assert outputs.load_checkpoint() is not None
    bad = np.full_like(params, np.nan)
    outputs.save(bad, [params, bad], 2)
    with pytest.raises(ValueError, match="holds a non-finite global policy"):
        outputs.load_checkpoint()


def test_output_dir_belongs_to_one_run(tmp_path):
    # a second server on the same output-dir is refused while the first runs; a fresh run sets an earlier run's
    # files aside instead of overwriting them (and appending to their rounds.jsonl); resume=true keeps them
    out = tmp_path / "out"
    config = parse_run_config({"task": "tabular", "output-dir": str(out)})
    first = ServerOutputs(config, n_agents=2)
    params = first.initial_params()
    first.save(params, [params], 1)
    first.record_round({"round": 1})
    with pytest.raises(RuntimeError, match="in use by another running server"):
        ServerOutputs(config, n_agents=2)
    first.close()
    resumed = ServerOutputs(parse_run_config({"task": "tabular", "output-dir": str(out), "resume": True}), n_agents=2)
    assert resumed.load_checkpoint() is not None
    resumed.close()
    fresh = ServerOutputs(config, n_agents=2)
    (earlier,) = out.glob("earlier-run-*")
    assert {"checkpoint.npz", "params.npy", "rounds.jsonl"} <= {p.name for p in earlier.iterdir()}
    assert not (out / "rounds.jsonl").exists() and fresh.load_checkpoint() is None
    fresh.close()
