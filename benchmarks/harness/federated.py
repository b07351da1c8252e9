"""
What the studies of federated policies on the heterogeneous families share (``heterogeneity``, ``noise_correction``,
``ppo_comparison``): the evaluation federation of a run, each agent's deterministic return under its own reward, the
mean and spread over seeds, and the uniformly random policy that normalised scores start from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Evaluation federation: sub-envs per agent, and episodes per sub-env (32 episodes per agent).
EVAL_ENVS_PER_AGENT, EVAL_EPISODES = 16, 2


class RandomPolicy:
    """
    Uniformly random actions, with an SB3 ``predict`` (the reference of the normalised score).

    :param action_space: a ``Discrete`` or ``Box`` space
    :param seed: the actions' seed
    """

    def __init__(self, action_space: Any, seed: int) -> None:
        self.n = getattr(action_space, "n", None)  # Discrete: uniform over the n actions
        if self.n is None:
            self.low, self.high = action_space.low, action_space.high
        self.rng = np.random.default_rng(seed)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """:return: one random action per observation (``deterministic`` is ignored)"""
        if self.n is not None:
            return self.rng.integers(int(self.n), size=len(obs)), None
        return self.rng.uniform(self.low, self.high, size=(len(obs), *self.low.shape)).astype(np.float32), None


def env_kwargs(heterogeneity: float) -> dict[str, Any]:
    """:return: a family's ``env_kwargs`` at a heterogeneity"""
    return {"heterogeneity": heterogeneity}


def eval_env(family: dict[str, Any], heterogeneity: float, seed: int, n_envs: int = EVAL_ENVS_PER_AGENT) -> Any:
    """
    :param family: ``env_id`` and ``n_agents``
    :param heterogeneity: the family's heterogeneity
    :param seed: the run's seed (the federation is seeded ``10000 + seed``)
    :param n_envs: sub-envs per agent
    :return: the run's evaluation federation
    """
    from sb3_fedpg import make_federated_vec_env

    kwargs = dict(env_kwargs=env_kwargs(heterogeneity), seed=10_000 + seed)
    return make_federated_vec_env(family["env_id"], family["n_agents"], n_envs, **kwargs)


def evaluate(model: Any, env: Any) -> list[float]:
    """:return: each agent's return of the deterministic policy under its own reward (:data:`EVAL_EPISODES` each)"""
    from sb3_fedpg.common.evaluation import evaluate_agents

    return [float(x) for x in evaluate_agents(model, env, EVAL_EPISODES, deterministic=True)]


def mean_std(values: list[float]) -> tuple[float, float]:
    """:return: the mean and the sample (``ddof = 1``) standard deviation over seeds (0 for a single seed)"""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
