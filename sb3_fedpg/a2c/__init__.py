from sb3_fedpg.a2c.a2c import FederatedA2C
from sb3_fedpg.a2c.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "FederatedA2C", "MlpPolicy", "MultiInputPolicy"]
