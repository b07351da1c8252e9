import os

from sb3_fedpg import envs  # noqa: F401  (registers the heterogeneous families' Gymnasium ids)
from sb3_fedpg.common.federated_vec_env import FederatedVecEnv, make_federated_vec_env
from sb3_fedpg.fedpg import FederatedPG

# Read version from file
version_file = os.path.join(os.path.dirname(__file__), "version.txt")
with open(version_file) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = ["FederatedPG", "FederatedVecEnv", "__version__", "make_federated_vec_env"]
