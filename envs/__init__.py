"""
Heterogeneous federated environment families (installed as ``sb3_fedpg.envs``).

Importing this package registers the families' Gymnasium ids.
"""

from sb3_fedpg.envs import classic_control
from sb3_fedpg.envs.classic_control import CartPoleTargetReward, PendulumTargetReward
from sb3_fedpg.envs.families import AgentRewardWrapper, FamilySpec, get_family, register_family
from sb3_fedpg.envs.native import SameStepCartPoleVectorEnv

__all__ = [
    "AgentRewardWrapper",
    "CartPoleTargetReward",
    "FamilySpec",
    "PendulumTargetReward",
    "SameStepCartPoleVectorEnv",
    "classic_control",
    "get_family",
    "register_family",
]
