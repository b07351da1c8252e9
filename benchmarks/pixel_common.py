"""
The pixel task both pixel benchmarks share: ``sb3_fedpg/HeteroPixelGrid-v0`` (42×42 images, 4 agents × 8 envs)
and the FederatedPG / PPO settings they run with (one definition, so the throughput is measured on the
configuration whose learning is reported). Every method uses ``CnnPolicy`` with the library's ``SmallCNN``
features extractor: SB3's default ``NatureCNN`` learned far more slowly on these small sparse images (FederatedPG
and SB3 PPO alike; the throughput benchmark measures both extractors).
"""

from __future__ import annotations

from typing import Any

ENV_ID = "sb3_fedpg/HeteroPixelGrid-v0"
N_AGENTS, N_ENVS_PER_AGENT = 4, 8
HETEROGENEITY = 1.0
#: FederatedPG's settings on the pixel family (with CnnPolicy and :func:`policy_kwargs`)
FEDPG_KWARGS: dict[str, Any] = {
    "n_steps": 8,
    "local_steps": 8,
    "local_optimizer": "adam",
    "learning_rate": 1e-3,
}
EXTRACTORS = ("SmallCNN", "NatureCNN")
#: rl-zoo's PPO settings for Atari (CnnPolicy): rollout length per env, minibatch, epochs
PPO_KWARGS: dict[str, Any] = {"n_steps": 128, "batch_size": 256, "n_epochs": 4}


def make_env(seed: int, heterogeneity: float = HETEROGENEITY) -> Any:
    """:return: the federated pixel env (``N_AGENTS × N_ENVS_PER_AGENT`` sub-environments)"""
    from sb3_fedpg import make_federated_vec_env

    return make_federated_vec_env(ENV_ID, N_AGENTS, N_ENVS_PER_AGENT, env_kwargs={"heterogeneity": heterogeneity}, seed=seed)


def policy_kwargs(extractor: str = "SmallCNN") -> dict[str, Any]:
    """:return: ``CnnPolicy``'s keyword arguments for the named features extractor"""
    from stable_baselines3.common.torch_layers import NatureCNN

    from sb3_fedpg.common.torch_layers import SmallCNN

    return {"features_extractor_class": {"SmallCNN": SmallCNN, "NatureCNN": NatureCNN}[extractor]}
