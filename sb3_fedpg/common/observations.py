"""
Observations as the batched policy sees them: SB3's preprocessing, then one flat float row per observation.

A rollout batch holds observations as ``(n_agents, batch, obs_dim)`` float tensors whatever the observation
space is, so that the round's code (halving batches, shuffling minibatches, bootstrapping) never looks inside
them. :class:`ObservationLayout` applies exactly SB3's ``preprocess_obs`` — images divided by 255 when the
policy normalises images, discrete observations one-hot — the same as ``policy.predict`` does, flattens
every part and concatenates the parts of a ``Dict`` space in the space's key order;
:meth:`~ObservationLayout.unflatten` gives a features extractor back the shapes (and keys) it expects.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs

#: What a VecEnv returns: an array with the sub-environments first, or a dict of such arrays.
VecObs = np.ndarray | dict[str, np.ndarray]


class ObservationLayout:
    """
    The flat preprocessed layout of an observation space.

    :param observation_space: the policy's observation space (``Box``, ``Discrete``, ``MultiDiscrete``,
        ``MultiBinary`` or a non-nested ``Dict`` of those)
    :param normalize_images: divide image observations by 255 (the policy's ``normalize_images``)
    """

    def __init__(self, observation_space: spaces.Space, normalize_images: bool = True) -> None:
        self.observation_space = observation_space
        self.normalize_images = normalize_images
        self.is_dict = isinstance(observation_space, spaces.Dict)
        if isinstance(observation_space, spaces.Dict):
            parts: dict[str | None, spaces.Space] = {key: space for key, space in observation_space.spaces.items()}
        else:
            parts = {None: observation_space}
        # The preprocessed shape of every part, read off SB3's own preprocessing of one sample.
        self.shapes: dict[str | None, tuple[int, ...]] = {}
        for key, space in parts.items():
            sample = th.as_tensor(np.asarray(space.sample())[None])
            # a part is not a Dict space (no nesting), so its preprocessing is a tensor
            self.shapes[key] = tuple(cast(th.Tensor, preprocess_obs(sample, space, normalize_images)).shape[1:])
        self.sizes = [int(np.prod(shape)) for shape in self.shapes.values()]
        self.obs_dim = sum(self.sizes)

    @property
    def is_float_passthrough(self) -> bool:
        """Whether preprocessing is a mere cast to float32 of a flat-able ``Box`` (what a NumPy rollout may do itself)."""
        space = self.observation_space
        return isinstance(space, spaces.Box) and not (self.normalize_images and is_image_space(space))

    def flatten(self, obs: VecObs, device: th.device | str = "cpu") -> th.Tensor:
        """
        :param obs: observations of ``B`` sub-environments (an array, or a dict of arrays for a ``Dict`` space)
        :param device: where the result lives
        :return: ``(B, obs_dim)`` float32: SB3's preprocessing, flattened (``Dict`` parts in key order)
        """
        if self.is_dict:
            if not isinstance(obs, dict):
                raise TypeError(f"expected a dict of observations for {self.observation_space}, got {type(obs).__name__}.")
            keys = cast("list[str]", list(self.shapes))  # a Dict space's keys
            tensors = {key: th.as_tensor(np.asarray(obs[key]), device=device) for key in keys}
            parts = cast("dict[str, th.Tensor]", preprocess_obs(tensors, self.observation_space, self.normalize_images))
            return th.cat([parts[key].reshape(len(parts[key]), -1).float() for key in keys], dim=1)
        flat = cast(
            th.Tensor,
            preprocess_obs(th.as_tensor(np.asarray(obs), device=device), self.observation_space, self.normalize_images),
        )
        return flat.reshape(len(flat), -1).float()

    def unflatten(self, flat: th.Tensor) -> th.Tensor | dict[str, th.Tensor]:
        """
        :param flat: ``(..., obs_dim)`` rows made by :meth:`flatten`
        :return: the preprocessed observations with their own shapes, ``(..., *shape)`` (a dict for a ``Dict`` space)
        """
        lead = flat.shape[:-1]
        pieces = th.split(flat, self.sizes, dim=-1)
        shaped = {key: piece.reshape(*lead, *shape) for (key, shape), piece in zip(self.shapes.items(), pieces, strict=True)}
        return cast("dict[str, th.Tensor]", shaped) if self.is_dict else shaped[None]


def stack_observations(observations: list[Any]) -> VecObs:
    """
    :param observations: single observations (arrays, or dicts of arrays)
    :return: them stacked along a new first axis (per key for dicts), as a VecEnv returns them
    """
    if isinstance(observations[0], dict):
        return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}
    return np.stack(observations)


def select_observations(obs: VecObs, index: Any) -> VecObs:
    """
    :param obs: a VecEnv's observations
    :param index: which sub-environments (anything NumPy indexing accepts)
    :return: those sub-environments' observations (per key for dicts)
    """
    if isinstance(obs, dict):
        return {key: value[index] for key, value in obs.items()}
    return obs[index]
