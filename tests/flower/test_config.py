"""Fast checks of the Flower app's configuration, validation and launcher helpers (no servers)."""

import pathlib

import numpy as np
import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from sb3_fedpg import __version__
from sb3_fedpg.common.validation import update_problem
from sb3_fedpg.flower.config import DEFAULT_RUN_CONFIG, parse_run_config
from sb3_fedpg.flower.deploy import toml_run_config

APP_PYPROJECT = pathlib.Path(__file__).resolve().parents[2] / "flower_app" / "pyproject.toml"


def test_app_pyproject_declares_every_run_config_key():
    # Flower only accepts --run-config overrides of keys the app declares.
    pyproject = tomllib.loads(APP_PYPROJECT.read_text())
    app = pyproject["tool"]["flwr"]["app"]
    assert app["config"] == DEFAULT_RUN_CONFIG
    # the app package names the version whose code it runs (its own version, so the FAB's name and hash change with
    # it), and its processes check it (sb3-fedpg-version); the one source is sb3_fedpg/version.txt
    assert __version__ == (APP_PYPROJECT.parents[1] / "sb3_fedpg" / "version.txt").read_text().strip()
    assert pyproject["project"]["version"] == __version__
    assert app["config"]["sb3-fedpg-version"] == __version__
    # no runtime dependencies: Flower's SuperLink (local simulation included) would install them with uv before every
    # run, and no index serves sb3-fedpg (tests/flower/test_local_sim.py shows what such a failure does)
    assert pyproject["project"]["dependencies"] == []
    with pytest.raises(ValueError, match=r"packaged for sb3-fedpg 0\.0\.1 but this machine runs"):
        parse_run_config({"sb3-fedpg-version": "0.0.1"})
    assert app["components"] == {
        "serverapp": "sb3_fedpg.flower.server_app:app",
        "clientapp": "sb3_fedpg.flower.client_app:app",
    }


def test_dataclass_defaults_are_the_default_run_config():
    # FlowerRunConfig() and the parsed DEFAULT_RUN_CONFIG (from FedPGHyperparams / FedPPOHyperparams) must agree
    from sb3_fedpg.flower.config import FlowerRunConfig

    assert parse_run_config({}) == FlowerRunConfig()


def test_run_config_converts_once_to_fedpg_kwargs():
    config = parse_run_config({"net-arch": "32,16", "max-grad-norm": 0.5, "correction": "false", "local-steps": 3})
    kwargs = config.algorithm_kwargs()
    assert kwargs["policy_kwargs"] == {"net_arch": [32, 16]}
    assert kwargs["max_grad_norm"] == 0.5
    assert kwargs["correction"] is False
    assert kwargs["local_steps"] == 3
    # 0 means "no limit" (TOML has no null)
    assert parse_run_config().algorithm_kwargs()["max_grad_norm"] is None
    assert parse_run_config({"max-update-norm": 0}).max_update_norm is None
    # Python keywords with "_" are accepted as overrides too
    assert parse_run_config(num_rounds=7).num_rounds == 7


@pytest.mark.parametrize(
    "bad",
    [{"no-such-key": 1}, {"task": "atari"}, {"local-steps": 0}, {"fault-kind": "gremlins"}, {"net-arch": ""}, {"seed": "x"}],
)
def test_bad_run_config_is_refused(bad):
    with pytest.raises(ValueError):
        parse_run_config(bad)


def test_fault_schedule():
    config = parse_run_config({"fault-agent": 2, "fault-kind": "nan", "fault-phase": "grad", "fault-rounds": "1,3"})
    assert config.fault_applies(2, "grad", 1) and config.fault_applies(2, "grad", 3)
    assert not config.fault_applies(2, "grad", 2)
    assert not config.fault_applies(1, "grad", 1)
    assert not config.fault_applies(2, "local", 1)


def test_update_validation():
    good = np.ones(5)
    assert update_problem(good, 5, max_norm=10.0) is None
    assert "shape" in update_problem(np.ones(6), 5)
    assert "shape" in update_problem(np.ones((5, 1)), 5)
    assert "non-finite" in update_problem(np.array([1.0, np.nan, 0, 0, np.inf]), 5)
    assert "norm" in update_problem(good * 1e12, 5, max_norm=1e6)
    assert "dtype" in update_problem(np.array(["a"] * 5), 5)
    assert update_problem(good * 1e12, 5, max_norm=None) is None


def test_toml_run_config():
    text = toml_run_config({"task": "tabular", "num-rounds": 2, "resume": False, "phase-timeout-s": 30.0})
    parsed = tomllib.loads("\n".join(text.split(" ")))
    assert parsed == {"task": "tabular", "num-rounds": 2, "resume": False, "phase-timeout-s": 30.0}


def test_aggregator_names_match_the_shared_aggregators():
    from sb3_fedpg.common.aggregators import AGGREGATORS
    from sb3_fedpg.flower.config import AGGREGATOR_NAMES, parse_run_config

    assert set(AGGREGATOR_NAMES) == set(AGGREGATORS)
    assert parse_run_config({"aggregator": "median"}).aggregator == "median"
    with pytest.raises(ValueError, match="run config 'aggregator' must be one of"):
        parse_run_config({"aggregator": "krum"})


@pytest.mark.parametrize(
    "node_config, message",
    [
        ({}, "has no agent identity"),
        ({"partition-id": 5, "num-partitions": 3}, r"partition-id=5 is outside \[0, num-partitions=3\)"),
        ({"partition-id": "x", "num-partitions": 3}, "are not integers"),
        ({"partition-id": 1.5, "num-partitions": 3}, "partition-id=1.5"),
        ({"partition-id": 0, "num-partitions": 0}, "num-partitions=0"),
    ],
)
def test_a_supernode_without_a_valid_agent_identity_is_told_how_to_start(node_config, message):
    import types

    from sb3_fedpg.flower.client_app import agent_identity

    with pytest.raises(ValueError, match=message):
        agent_identity(types.SimpleNamespace(node_config=node_config))
    assert agent_identity(types.SimpleNamespace(node_config={"partition-id": 2, "num-partitions": 3})) == (2, 3)
