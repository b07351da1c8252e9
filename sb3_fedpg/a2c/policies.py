# FederatedA2C is FederatedPG with A2C's defaults: the same policies (SB3 keeps a policies.py per algorithm).
from sb3_fedpg.fedpg.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
