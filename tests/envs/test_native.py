"""Rendering the native CartPole vector env (rgb_array), alone and through the federated VecEnv."""

import numpy as np
import pytest
from sb3_fedpg.envs.native import SameStepCartPoleVectorEnv

from sb3_fedpg import make_federated_vec_env

pytest.importorskip("pygame")


def test_each_copy_is_drawn_with_its_own_pole_length():
    env = SameStepCartPoleVectorEnv(num_envs=3, length_scale=[1.0, 1.0, 2.0], render_mode="rgb_array")
    env.reset(seed=0)
    env.state[:] = env.state[:, :1]  # every copy in the same state
    frames = env.render()
    assert len(frames) == 3 and frames[0].shape == (400, 600, 3) and frames[0].dtype == np.uint8
    np.testing.assert_array_equal(frames[0], frames[1])
    assert (frames[2] != frames[0]).any()  # the longer pole
    assert isinstance(env.length, np.ndarray) and env.length.shape == (3,)  # the physics' lengths are restored
    env.close()


def test_federated_env_renders_rgb_array_or_warns_without_render_mode():
    env = make_federated_vec_env("CartPole-v1", n_agents=2, n_envs_per_agent=2, env_kwargs={"render_mode": "rgb_array"})
    env.reset()
    assert len(env.get_images()) == 4
    assert env.render().shape == (800, 1200, 3)  # SB3 tiles the four frames 2 x 2
    env.close()
    plain = make_federated_vec_env("CartPole-v1", n_agents=2, n_envs_per_agent=2)
    plain.reset()
    with pytest.warns(UserWarning, match="no `render_mode` was passed"):
        assert plain.render() is None
