"""
Heterogeneous federated environment families (installed as ``sb3_fedpg.envs``).

Importing this package registers the families' Gymnasium ids. The Box2D and MuJoCo
families only register ids here; their optional dependencies (``gymnasium[box2d]``,
``gymnasium[mujoco]``) are imported when one of their envs is made.
"""

from sb3_fedpg.envs import arm, box2d, classic_control, goals, lqr, mujoco, pixelgrid, pointmass
from sb3_fedpg.envs.arm import ArmGoalReward, SameStepTwoLinkArmVectorEnv, TwoLinkArmEnv
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
from sb3_fedpg.envs.goals import GoalWeightReward, register_goal_family
from sb3_fedpg.envs.mujoco import HalfCheetahVelocityReward
from sb3_fedpg.envs.native import SameStepCartPoleVectorEnv
from sb3_fedpg.envs.pixelgrid import PixelGridEnv, PixelGridGoalReward, SameStepPixelGridVectorEnv, pixel_grid_returns
from sb3_fedpg.envs.pointmass import PointMassEnv, PointMassGoalReward, SameStepPointMassVectorEnv

__all__ = [
    "AgentRewardWrapper",
    "ArmGoalReward",
    "CartPoleTargetReward",
    "FamilySpec",
    "GoalWeightReward",
    "HalfCheetahVelocityReward",
    "LunarLanderTargetReward",
    "MountainCarFuelReward",
    "PendulumTargetReward",
    "PixelGridEnv",
    "PixelGridGoalReward",
    "PointMassEnv",
    "PointMassGoalReward",
    "SameStepCartPoleVectorEnv",
    "SameStepPixelGridVectorEnv",
    "SameStepPointMassVectorEnv",
    "SameStepTwoLinkArmVectorEnv",
    "SharedReward",
    "TwoLinkArmEnv",
    "arm",
    "box2d",
    "classic_control",
    "get_family",
    "goals",
    "lqr",
    "make_pole_length_cartpole",
    "make_pole_length_vector_env",
    "mujoco",
    "pixel_grid_returns",
    "pixelgrid",
    "pointmass",
    "pole_length_scales",
    "register_family",
    "register_goal_family",
]
