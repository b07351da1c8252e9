"""
rl-zoo style runs: YAML hyperparameters keyed by env id, a trainer, an evaluator and a plotter.

- ``python -m sb3_fedpg.zoo.train --algo fedpg --env sb3_fedpg/HeteroCartPole-v0 -f logs``
- ``python -m sb3_fedpg.zoo.enjoy --algo fedpg --env sb3_fedpg/HeteroCartPole-v0 -f logs`` (``--record-video``)
- ``python -m sb3_fedpg.zoo.plot -f logs --algo fedpg ppo --env sb3_fedpg/HeteroCartPole-v0 -o curves.png``
- ``python -m sb3_fedpg.zoo.train --algo fedpg --env sb3_fedpg/HeteroCartPole-v0 --optimize --n-trials 20`` (Optuna)
- ``python -m sb3_fedpg.zoo.rl_zoo3_entry --algo fedpg --env CartPole-v1 ...`` (rl_zoo3's own trainer)

See ``docs/zoo.md``.
"""

from __future__ import annotations

import pathlib

from stable_baselines3.common.base_class import BaseAlgorithm

#: The library's federated algorithms, by their zoo names.
FEDERATED_ALGOS = ("fedpg", "fedppo", "fedsvrpgm", "feda2c")
#: Algorithms of the zoo runner: the federated ones and the centrally trained SB3 references.
ZOO_ALGOS = (*FEDERATED_ALGOS, "a2c", "ppo")

#: ``zoo_configs/`` at the repository top level (present in a source checkout / editable install).
CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "zoo_configs"


def get_algo_class(name: str) -> type[BaseAlgorithm]:
    """
    :param name: ``"fedpg"``, ``"fedppo"``, ``"fedsvrpgm"``, ``"feda2c"``, ``"a2c"`` or ``"ppo"``
    :return: the algorithm class
    """
    if name == "fedpg":
        from sb3_fedpg.fedpg import FederatedPG

        return FederatedPG
    if name == "fedppo":
        from sb3_fedpg.ppo import FederatedPPO

        return FederatedPPO
    if name == "fedsvrpgm":
        from sb3_fedpg.svrpgm import FederatedSVRPGM

        return FederatedSVRPGM
    if name == "feda2c":
        from sb3_fedpg.a2c import FederatedA2C

        return FederatedA2C
    if name in ("a2c", "ppo"):
        import stable_baselines3

        return getattr(stable_baselines3, name.upper())
    raise ValueError(f"unknown algorithm {name!r}: choose one of {ZOO_ALGOS}.")


def default_config_file(algo: str) -> pathlib.Path:
    """
    :param algo: the algorithm name
    :return: ``zoo_configs/<algo>.yml`` of this checkout
    """
    return CONFIG_DIR / f"{algo}.yml"


__all__ = ["CONFIG_DIR", "FEDERATED_ALGOS", "ZOO_ALGOS", "default_config_file", "get_algo_class"]
