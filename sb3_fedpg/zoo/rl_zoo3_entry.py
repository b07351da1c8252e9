"""
Run FederatedPG with rl_zoo3's own trainer.

.. code-block:: bash

    python -m sb3_fedpg.zoo.rl_zoo3_entry --algo fedpg --env CartPole-v1 -n 20000 --num-threads 1

rl_zoo3's command line only accepts the algorithms of its ``ALGOS`` dict, and its
``--gym-packages`` option is imported too late to add one. Its ``train()`` reads ``ALGOS``
when it is called, though, so registering ``fedpg`` first and then calling it is enough;
everything else (``-f``, ``-params``, ``--track``, ``--eval-freq``, ``-optimize`` needs a
sampler too) is rl_zoo3's. Without ``--conf-file``, ``--algo fedpg`` reads
``zoo_configs/fedpg.yml`` of this checkout (rl_zoo3 has no ``hyperparams/fedpg.yml``).

rl_zoo3 builds the env itself: ``n_envs`` copies of ``gym.make(env_id, **env_kwargs)``, all
identical. FederatedPG splits them into ``n_agents`` blocks (``n_agents`` must divide
``n_envs``), so every agent sees the same task. For heterogeneous agents use
:mod:`sb3_fedpg.zoo.train`, which builds the federated env of a family. Importing rl_zoo3
patches Gymnasium's ``TimeLimit`` (rl_zoo3's own doing), so this module is never imported by
``sb3_fedpg`` itself.
"""

from __future__ import annotations

import sys

from sb3_fedpg.zoo import default_config_file


def register() -> None:
    """Add ``fedpg`` (:class:`~sb3_fedpg.FederatedPG`) to ``rl_zoo3.ALGOS``."""
    import rl_zoo3

    from sb3_fedpg import FederatedPG

    rl_zoo3.ALGOS["fedpg"] = FederatedPG


def _with_default_config(argv: list[str]) -> list[str]:
    algo = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--algo"), None)
    algo = algo or next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--algo=")), None)
    has_conf = any(arg in ("--conf-file", "-conf") or arg.startswith("--conf-file=") for arg in argv)
    if algo == "fedpg" and not has_conf:
        return [*argv, "--conf-file", str(default_config_file("fedpg"))]
    return argv


def main(argv: list[str] | None = None) -> None:
    """
    Register ``fedpg`` and run ``rl_zoo3.train.train()`` with ``argv``.

    :param argv: rl_zoo3 train arguments (``None``: ``sys.argv[1:]``)
    """
    register()
    from rl_zoo3.train import train

    argv = _with_default_config(list(sys.argv[1:] if argv is None else argv))
    saved = sys.argv
    sys.argv = [saved[0] if saved else "rl_zoo3_entry", *argv]
    try:
        train()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
