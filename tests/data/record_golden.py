"""
Record reference global parameters of a few fixed configurations (``tests/data/golden_params.npz``).

Run once on a trusted commit; ``tests/fedpg/test_golden.py`` then checks that refactors keep
training bit-identical. Recorded on commit 1676f8f (before the round/learner refactor).

    python tests/data/record_golden.py
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch as th

CONFIGS: dict[str, dict] = {
    # the demo's configuration (README command 1), three rounds
    "demo": dict(
        env="sb3_fedpg/HeteroCartPole-v0",
        n_agents=8,
        n_envs_per_agent=8,  # the default when this was recorded (SB3's 1 since)
        local_steps=5,
        n_steps=16,
        learning_rate=0.1,
        env_kwargs={"heterogeneity": 1.0},
        normalize_advantage="per_agent",  # recorded before the shared scale became the default
        seed=0,
    ),
    # the paper-faithful estimator on a continuous family, fresh anchor batch, Adam, clipping
    "gpomdp": dict(
        env="sb3_fedpg/HeteroPendulum-v0",
        n_agents=4,
        n_envs_per_agent=4,
        local_steps=3,
        n_steps=32,
        learning_rate=0.01,
        estimator="gpomdp",
        baseline="mean",
        normalize_advantage=False,
        reuse_anchor_batch=False,
        local_optimizer="adam",
        max_grad_norm=5.0,
        env_kwargs={"heterogeneity": 1.0},
        seed=3,
    ),
    # FedAvg-PG, partial participation, a robust aggregator, entropy bonus
    "fedavg_partial": dict(
        env="sb3_fedpg/HeteroCartPole-v0",
        n_agents=6,
        n_envs_per_agent=2,
        local_steps=4,
        n_steps=32,
        correction=False,
        participation=0.5,
        aggregator="median",
        ent_coef=0.01,
        env_kwargs={"heterogeneity": 0.5},
        normalize_advantage="per_agent",  # recorded before the shared scale became the default
        seed=7,
    ),
}
ROUNDS = 3


def run(name: str) -> dict[str, np.ndarray]:
    from sb3_fedpg import FederatedPG

    kwargs = dict(CONFIGS[name])
    env = kwargs.pop("env")
    th.set_num_threads(1)
    model = FederatedPG("MlpPolicy", env, device="cpu", **kwargs)  # the recorded numbers are the CPU's
    steps_per_round = model.n_envs * model.n_steps * (model.local_steps + (0 if model.reuse_anchor_batch else 1))
    model.learn(ROUNDS * steps_per_round)
    critics = th.cat([p.detach().flatten() for p in model.critics.parameters()]).numpy()
    return {
        f"{name}/params": model.get_global_parameters().numpy(),
        f"{name}/critics": critics,
        f"{name}/num_timesteps": np.array(model.num_timesteps),
    }


if __name__ == "__main__":
    out: dict[str, np.ndarray] = {}
    for config in CONFIGS:
        out.update(run(config))
    np.savez(pathlib.Path(__file__).with_name("golden_params.npz"), **out)
    print({k: (v.shape, float(np.abs(v).sum())) for k, v in out.items()})
