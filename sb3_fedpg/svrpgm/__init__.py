from sb3_fedpg.svrpgm.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_fedpg.svrpgm.svrpgm import FederatedSVRPGM

__all__ = ["CnnPolicy", "FederatedSVRPGM", "MlpPolicy", "MultiInputPolicy"]
