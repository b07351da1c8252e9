"""
Heterogeneous federated environment families (installed as ``sb3_fedpg.envs``).

Importing this package registers the families' Gymnasium ids. The Box2D and MuJoCo
families only register ids here; their optional dependencies (``gymnasium[box2d]``,
``gymnasium[mujoco]``) are imported when one of their envs is made.
"""

from sb3_fedpg.envs import box2d, classic_control, lqr, mujoco
from sb3_fedpg.envs.box2d import LunarLanderTargetReward
from sb3_fedpg.envs.classic_control import (
    CartPoleTargetReward,
    MountainCarFuelReward,
    PendulumTargetReward,
    SharedReward,
    make_pole_length_cartpole,
    make_pole_length_vector_env,
    pole_length_scales,
)
from sb3_fedpg.envs.families import AgentRewardWrapper, FamilySpec, get_family, register_family
from sb3_fedpg.envs.mujoco import HalfCheetahVelocityReward
from sb3_fedpg.envs.native import SameStepCartPoleVectorEnv

__all__ = [
    "AgentRewardWrapper",
    "CartPoleTargetReward",
    "FamilySpec",
    "HalfCheetahVelocityReward",
    "LunarLanderTargetReward",
    "MountainCarFuelReward",
    "PendulumTargetReward",
    "SameStepCartPoleVectorEnv",
    "SharedReward",
    "box2d",
    "classic_control",
    "get_family",
    "lqr",
    "make_pole_length_cartpole",
    "make_pole_length_vector_env",
    "mujoco",
    "pole_length_scales",
    "register_family",
]
