"""predict_agent_values takes observations as SB3's predict does, and says what is wrong with any other shape."""

import numpy as np
import pytest

from sb3_fedpg import FederatedPG


@pytest.fixture(scope="module")
def model():
    return FederatedPG("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=3, n_envs_per_agent=2, n_steps=8, seed=0)


def test_one_observation_a_batch_and_an_empty_batch(model):
    batch = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    values = model.predict_agent_values(batch)
    assert values.shape == (3, 5)
    np.testing.assert_allclose(model.predict_agent_values(batch[2]), values[:, 2:3], rtol=1e-5)
    assert model.predict_agent_values(np.zeros((0, 4), np.float32)).shape == (3, 0)


@pytest.mark.parametrize("shape", [(3, 5), (2, 2), (4, 1), (1, 2, 4)])
def test_a_wrong_shape_is_named(model, shape):
    # (2, 2) has four numbers like one observation: it used to be read as one, silently
    with pytest.raises(ValueError, match=rf"Unexpected observation shape {re_shape(shape)}.*\(4,\) or \(n_env, 4\)"):
        model.predict_agent_values(np.zeros(shape, np.float32))


def re_shape(shape):
    return str(shape).replace("(", r"\(").replace(")", r"\)")
