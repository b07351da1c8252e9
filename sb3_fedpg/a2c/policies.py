# This file is here just to define MlpPolicy/CnnPolicy/MultiInputPolicy,
# like it is done in Stable-Baselines3.
from sb3_fedpg.common.policies import (
    FederatedActorCriticCnnPolicy,
    FederatedActorCriticPolicy,
    FederatedMultiInputActorCriticPolicy,
)

MlpPolicy = FederatedActorCriticPolicy
CnnPolicy = FederatedActorCriticCnnPolicy
MultiInputPolicy = FederatedMultiInputActorCriticPolicy
