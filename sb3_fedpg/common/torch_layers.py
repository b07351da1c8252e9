"""Features extractors beyond SB3's own (pass them as ``policy_kwargs={"features_extractor_class": ...}``)."""

from __future__ import annotations

import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class SmallCNN(BaseFeaturesExtractor):
    """
    A light CNN for small images: two 3×3 convolutions of stride 2 (16 and 32 channels, ReLU) and a linear layer.

    SB3's ``NatureCNN`` (built for 84×84 Atari frames) needs images of at least 36×36 and costs about 0.5 MFLOP per
    42×42 frame; on the small, sparse images of ``sb3_fedpg/HeteroPixelGrid-v0`` it learned far more slowly than
    this extractor in our runs (both with FederatedPG and SB3 PPO; see ``benchmarks/pixel_learning.py``).

    :param observation_space: a channel-first image space (at least 7×7)
    :param features_dim: number of features (output units of the linear layer)
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 128) -> None:
        if not is_image_space(observation_space, check_channels=False, normalized_image=True):
            raise ValueError(f"SmallCNN needs a 3-D image observation space (channels first), got {observation_space}.")
        super().__init__(observation_space, features_dim)
        channels, height, width = observation_space.shape
        if min(height, width) < 7:
            raise ValueError(f"SmallCNN needs images of at least 7x7 pixels, got {height}x{width}.")
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        with th.no_grad():
            n_flatten = self.cnn(th.zeros(1, channels, height, width)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))
