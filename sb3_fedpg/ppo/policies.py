# This file is here just to define MlpPolicy,
# like it is done in Stable-Baselines3.
from stable_baselines3.common.policies import ActorCriticPolicy

MlpPolicy = ActorCriticPolicy
