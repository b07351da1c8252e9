"""One definition of the hyperparameters, the same validation at every entry point."""

import inspect

import pytest

from sb3_fedpg import FederatedA2C, FederatedPG
from sb3_fedpg.common.hyperparams import FedPGHyperparams
from sb3_fedpg.flower.config import ALGORITHM_KEYS, DEFAULT_RUN_CONFIG, FlowerRunConfig, parse_run_config

BAD = [
    ("local_steps", 0, "local_steps must be a positive integer"),
    ("estimator", "ppo", "unknown estimator 'ppo'"),
    ("correction", "False", "correction must be True or False"),
    ("participation", 5, r"participation must be in \(0, 1\]"),
    ("gamma", 7, r"gamma must be in \(0, 1\]"),
    ("n_steps", True, "n_steps must be a positive integer"),
    ("max_grad_norm", float("nan"), "max_grad_norm must be a finite number > 0"),
]


@pytest.mark.parametrize("algo", [FederatedPG, FederatedA2C])
def test_constructor_signature_and_docstring_follow_the_one_definition(algo):
    params = inspect.signature(algo.__init__).parameters
    doc = algo.__doc__
    for name, default in algo.hyperparams_class.defaults().items():
        assert params[name].default == default, name
        assert f":param {name}:" in doc, name


def test_flower_run_config_defaults_follow_the_one_definition():
    defaults = FedPGHyperparams.defaults()
    typed = FlowerRunConfig()
    for name in ALGORITHM_KEYS:
        assert getattr(typed, name) == defaults[name], name
        assert DEFAULT_RUN_CONFIG[name.replace("_", "-")] == (0.0 if defaults[name] is None else defaults[name]), name
    assert parse_run_config().algorithm_kwargs()["local_steps"] == defaults["local_steps"]


@pytest.mark.parametrize("name, value, message", BAD)
def test_constructor_rejects(name, value, message):
    with pytest.raises(ValueError, match=message):
        FederatedPG("MlpPolicy", "CartPole-v1", **{name: value})


@pytest.mark.parametrize("name, value, message", BAD)
def test_load_kwargs_cannot_bypass_validation(tmp_path, name, value, message):
    path = tmp_path / "model.zip"
    FederatedPG("MlpPolicy", "CartPole-v1", n_envs_per_agent=2, n_steps=4).save(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=message):
        FederatedPG.load(path, **{name: value})
    assert path.read_bytes() == before


@pytest.mark.parametrize("name, value, message", BAD)
def test_zoo_config_rejects(name, value, message):
    from sb3_fedpg.zoo.config import ZooConfigError, validate_hyperparams

    # The zoo's type check may answer first ("bad value ... for 'correction': expected bool"): also clear.
    with pytest.raises(ZooConfigError, match=f"{message}|bad value .* for '{name}'"):
        validate_hyperparams({"n_timesteps": 1000, name: value}, FederatedPG, "fedpg.yml:CartPole-v1")


# Strings are left out: the Flower run config parses them itself ("false" is a valid bool there).
@pytest.mark.parametrize("name, value, message", [b for b in BAD if b[0] in ALGORITHM_KEYS and not isinstance(b[1], str)])
def test_flower_run_config_rejects(name, value, message):
    kebab = name.replace("_", "-")
    with pytest.raises(ValueError, match=f"{message}|run config '{kebab}' must be"):
        parse_run_config({name.replace("_", "-"): value})


def test_load_with_a_named_aggregator_builds_it(tmp_path):
    path = tmp_path / "model.zip"
    FederatedPG("MlpPolicy", "CartPole-v1", n_envs_per_agent=2, n_steps=4).save(path)
    model = FederatedPG.load(path, env=None, aggregator="median")
    assert callable(model.aggregator) and type(model.aggregator).__name__ == "MedianAggregator"


def test_a_learning_rate_schedule_that_turns_negative_stops_before_the_round():
    def schedule(progress_remaining):
        return 0.05 if progress_remaining > 0.5 else -0.01

    model = FederatedPG("MlpPolicy", "CartPole-v1", learning_rate=schedule, n_envs_per_agent=2, n_steps=8, local_steps=1)
    with pytest.raises(ValueError, match=r"learning_rate schedule gave -0\.01"):
        model.learn(200)
    assert model.num_timesteps < 200


def test_new_modes_are_validated():
    from sb3_fedpg import FederatedPPO

    with pytest.raises(ValueError, match=r"normalize_advantage must be True \(= 'shared'\), False, 'shared' or 'per_agent'"):
        FederatedPG("MlpPolicy", "CartPole-v1", normalize_advantage="per-agent")
    with pytest.raises(ValueError, match=r"unknown variance_control 'snr': choose one of \('none', 'snr_damping'\)"):
        FederatedPPO("MlpPolicy", "CartPole-v1", variance_control="snr")
    with pytest.raises(ValueError, match='\'ppo-normalize-advantage\' must be "shared", "per_agent"'):
        parse_run_config({"ppo-normalize-advantage": "sometimes"})
    assert parse_run_config({"normalize-advantage": True}).normalize_advantage is True
    assert parse_run_config({"normalize-advantage": "per_agent"}).shared_normalization is False
