"""
Fast-FedPG on Flower: each agent a ClientApp (SuperNode), the server a ServerApp.

See ``docs/flower.md``. The apps
themselves live in :mod:`sb3_fedpg.flower.client_app` and :mod:`sb3_fedpg.flower.server_app`.
"""

from sb3_fedpg.flower.config import DEFAULT_RUN_CONFIG, FlowerRunConfig, parse_run_config

__all__ = ["DEFAULT_RUN_CONFIG", "FlowerRunConfig", "parse_run_config"]
