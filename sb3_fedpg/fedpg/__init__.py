from sb3_fedpg.fedpg.fedpg import FederatedPG
from sb3_fedpg.fedpg.policies import MlpPolicy

__all__ = ["FederatedPG", "MlpPolicy"]
