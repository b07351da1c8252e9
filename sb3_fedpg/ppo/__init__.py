from sb3_fedpg.ppo.policies import MlpPolicy
from sb3_fedpg.ppo.ppo import FederatedPPO

__all__ = ["FederatedPPO", "MlpPolicy"]
