"""
Run the Flower app in Flower's simulation engine (Ray) from Python, e.g. in tests and benchmarks.

The command-line way is ``flwr run flower_app <simulation connection>`` (see ``docs/flower.md``);
this helper runs the same ServerApp/ClientApp with ``flwr.simulation.run_simulation`` in this
process, with the run config given as Python overrides (such runs have no run config of their own).
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from sb3_fedpg.flower.config import parse_run_config


def run_simulation(
    n_agents: int,
    run_config: Mapping[str, Any] | None = None,
    num_cpus: int | None = None,
    client_num_cpus: float = 1.0,
    verbose: bool = False,
    ray_address: str | None = None,
) -> np.ndarray:
    """
    Fast-FedPG with ``n_agents`` virtual SuperNodes in Flower's simulation engine.

    :param n_agents: number of virtual agents (SuperNodes; agent ``i`` has ``partition-id=i``)
    :param run_config: kebab-case run config entries (see :data:`sb3_fedpg.flower.config.DEFAULT_RUN_CONFIG`);
        ``num-agents`` defaults to ``n_agents`` so the server waits for all of them
    :param num_cpus: CPUs given to Ray (``None``: all of this machine's)
    :param client_num_cpus: CPUs reserved per ClientApp (1 was fastest on 2 cores, see NOTES.md)
    :param verbose: Flower's debug logging
    :param ray_address: run on an existing Ray cluster (``"host:port"`` of its head, e.g. from
        :class:`LocalRayCluster` or ``ray start --head``) instead of a private one; ``num_cpus`` is then the cluster's
    :return: the global parameters after every round, shape ``(T + 1, n_params)`` (read from the checkpoint)
    """
    from flwr.simulation import run_simulation as flwr_run_simulation

    from sb3_fedpg.flower.client_app import make_client_app
    from sb3_fedpg.flower.outputs import load_arrays
    from sb3_fedpg.flower.server_app import make_server_app

    overrides = {"num-agents": n_agents, **dict(run_config or {})}
    config = parse_run_config(overrides)  # fail here, not inside a Ray worker
    checkpoint = pathlib.Path(config.output_dir) / "checkpoint.npz"
    if checkpoint.exists() and not config.resume:
        checkpoint.unlink()
    backend_config: dict[str, dict[str, Any]] = {
        "client_resources": {"num_cpus": client_num_cpus, "num_gpus": 0.0},
        # Loopback only; no dashboard.
        "init_args": {
            "num_cpus": num_cpus or os.cpu_count() or 1,
            "include_dashboard": False,
            "_node_ip_address": "127.0.0.1",
            "logging_level": logging.WARNING,
            "log_to_driver": verbose,
        },
    }
    if ray_address is not None:  # the cluster has its CPUs and address already; Ray refuses num_cpus here
        backend_config["init_args"] = {
            "address": ray_address,
            "logging_level": logging.WARNING,
            "log_to_driver": verbose,
        }
    # flwr 1.42 marks run_simulation deprecated in favour of `flwr run` against a simulation connection (see
    # docs/flower.md); it is still the one in-process entry point that takes Python-side overrides, so it is kept
    # here, with its deprecation warning left visible.
    flwr_run_simulation(
        server_app=make_server_app(overrides),
        client_app=make_client_app(overrides),
        num_supernodes=n_agents,
        backend_config=backend_config,
        verbose_logging=verbose,
    )
    if not checkpoint.exists():
        raise RuntimeError(f"the simulation ended without a checkpoint in {config.output_dir} (see the log above)")
    return load_arrays(checkpoint, ("history",))["history"]


class LocalRayCluster:
    """
    A Ray head node on ``127.0.0.1`` started here (``ray start --head --block``) and stopped here by process group —
    the cluster a simulation can attach to with ``run_simulation(..., ray_address=cluster.address)``. More machines
    join a real cluster with ``ray start --address <head>:<port>`` (see ``docs/flower.md``).

    :param temp_dir: Ray's session folder (keep the path short: Ray puts Unix sockets in it)
    :param num_cpus: CPUs the head node offers
    :param port: the head's GCS port (``None``: a free one)
    """

    def __init__(self, temp_dir: str | os.PathLike, num_cpus: int = 2, port: int | None = None) -> None:
        from sb3_fedpg.flower.deploy import free_port

        self.temp_dir = pathlib.Path(temp_dir).resolve()
        self.num_cpus = num_cpus
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: Any = None

    def __enter__(self) -> LocalRayCluster:
        import shutil
        import subprocess

        from sb3_fedpg.flower.deploy import wait_for_port

        ray = shutil.which("ray")
        if ray is None:
            raise FileNotFoundError("the `ray` command is missing: pip install 'flwr[simulation]'")
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        command = [
            ray,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            f"--num-cpus={self.num_cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
        ]
        log = open(self.temp_dir / "ray_head.log", "wb")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for_port(self.port, timeout=120.0)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal
        import subprocess

        if self.process is None or self.process.poll() is not None:
            return
        try:  # the head and every Ray process it started share its process group
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        except ProcessLookupError:
            pass
