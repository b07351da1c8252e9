"""The flat observation layout applies SB3's preprocessing exactly and gives every part its shape back."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs

from sb3_fedpg.common.observations import ObservationLayout, select_observations, stack_observations

IMAGE = spaces.Box(0, 255, (3, 8, 8), dtype=np.uint8)
DICT = spaces.Dict(
    {
        "image": IMAGE,
        "vector": spaces.Box(-1, 1, (4,), dtype=np.float32),
        "discrete": spaces.Discrete(3),
        "multi": spaces.MultiDiscrete([2, 3]),
        "bits": spaces.MultiBinary(5),
    }
)


def _batch(space, n=6, seed=0):
    space.seed(seed)
    return stack_observations([space.sample() for _ in range(n)])


@pytest.mark.parametrize("normalize_images", [True, False])
@pytest.mark.parametrize("space", [IMAGE, DICT, spaces.Discrete(4), spaces.Box(-2, 2, (2, 3), dtype=np.float64)])
def test_flatten_is_sb3_preprocessing_and_unflatten_inverts_it(space, normalize_images):
    layout = ObservationLayout(space, normalize_images)
    obs = _batch(space)
    flat = layout.flatten(obs)
    assert flat.shape == (6, layout.obs_dim) and flat.dtype == th.float32
    tensors = {k: th.as_tensor(v) for k, v in obs.items()} if isinstance(obs, dict) else th.as_tensor(obs)
    expected = preprocess_obs(tensors, space, normalize_images)
    back = layout.unflatten(flat)
    if isinstance(space, spaces.Dict):
        assert list(back) == list(space.spaces)
        for key in space.spaces:
            th.testing.assert_close(back[key], expected[key].float())
    else:
        th.testing.assert_close(back, expected.float())


def test_images_are_divided_by_255_only_when_the_policy_normalises_them():
    obs = np.full((2, *IMAGE.shape), 255, dtype=np.uint8)
    assert ObservationLayout(IMAGE, True).flatten(obs).max() == 1.0
    assert ObservationLayout(IMAGE, False).flatten(obs).max() == 255.0
    # the NumPy rollout path (a float cast) is allowed only where preprocessing is one
    assert not ObservationLayout(IMAGE, True).is_float_passthrough
    assert ObservationLayout(IMAGE, False).is_float_passthrough
    assert not ObservationLayout(DICT, False).is_float_passthrough


def test_unflatten_keeps_leading_dimensions():
    layout = ObservationLayout(DICT)
    flat = layout.flatten(_batch(DICT, n=12)).view(3, 4, -1)
    parts = layout.unflatten(flat)
    assert parts["image"].shape == (3, 4, 3, 8, 8) and parts["multi"].shape == (3, 4, 5)


def test_a_dict_layout_refuses_an_array_with_a_clear_error():
    with pytest.raises(TypeError, match="expected a dict of observations"):
        ObservationLayout(DICT).flatten(np.zeros((2, 3)))


def test_select_observations_per_key():
    obs = _batch(DICT, n=4)
    one = select_observations(obs, 2)
    assert set(one) == set(DICT.spaces) and np.array_equal(one["image"], obs["image"][2])
    assert np.array_equal(select_observations(obs["vector"], [1, 3]), obs["vector"][[1, 3]])
