# This file is here just to define MlpPolicy,
# like it is done in Stable-Baselines3.
from sb3_fedpg.common.policies import FederatedActorCriticPolicy

MlpPolicy = FederatedActorCriticPolicy
