"""
sb3-fedpg: federated and multi-task policy gradient (Fast-FedPG) for Stable-Baselines3.

Importing the package registers the heterogeneous families' Gymnasium ids (``envs`` needs only
Gymnasium and NumPy). Everything that needs torch or Stable-Baselines3 (``FederatedPG``, ``FederatedPPO``,
``FederatedSVRPGM``, ``FederatedA2C``, ``FederatedVecEnv``, ``make_federated_vec_env``) is imported on first use, so
torch-free modules such as :mod:`sb3_fedpg.flower.config` and :mod:`sb3_fedpg.common.hyperparams` stay torch-free.
"""

import importlib
import os
from typing import Any

from sb3_fedpg import envs  # noqa: F401  (registers the heterogeneous families' Gymnasium ids)

# Read version from file
version_file = os.path.join(os.path.dirname(__file__), "version.txt")
with open(version_file) as file_handler:
    __version__ = file_handler.read().strip()

_LAZY = {
    "FederatedPG": "sb3_fedpg.fedpg",
    "FederatedPPO": "sb3_fedpg.ppo",
    "FederatedSVRPGM": "sb3_fedpg.svrpgm",
    "FederatedA2C": "sb3_fedpg.a2c",
    "FederatedVecEnv": "sb3_fedpg.common.federated_vec_env",
    "make_federated_vec_env": "sb3_fedpg.common.federated_vec_env",
}

__all__ = [
    "FederatedA2C",
    "FederatedPG",
    "FederatedPPO",
    "FederatedSVRPGM",
    "FederatedVecEnv",
    "__version__",
    "make_federated_vec_env",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sb3_fedpg' has no attribute {name!r}")
