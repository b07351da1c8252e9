import os

import pytest
import torch as th

# One torch thread: 2-4x faster on the 2-core machines we test on, and deterministic.
th.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def tiny_model():
    """
    A factory of the smallest federated models: ``tiny_model(cls=FederatedPG, seed=0, **kwargs)`` on
    HeteroCartPole with 2 agents x 2 envs, 8 steps per batch and an [8] network (FederatedPPO: minibatches of 8).
    """
    from sb3_fedpg import FederatedPG, FederatedPPO

    def make(cls=FederatedPG, seed=0, **kwargs):
        settings = {"n_agents": 2, "n_envs_per_agent": 2, "n_steps": 8, "seed": seed, "policy_kwargs": {"net_arch": [8]}}
        if cls is FederatedPPO:
            settings["batch_size"] = 8
        return cls("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", **{**settings, **kwargs})

    return make
