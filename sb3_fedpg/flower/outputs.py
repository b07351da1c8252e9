"""
What the Flower server writes: the global policy, a resumable checkpoint, the round log and the SB3 logger's files.
"""

from __future__ import annotations

import json
import pathlib
import zipfile
from typing import Any

import numpy as np

from sb3_fedpg.common.files import atomic_write, make_folder
from sb3_fedpg.flower.agent import make_agent_model
from sb3_fedpg.flower.config import FlowerRunConfig


class ServerOutputs:
    """
    What the server writes to ``output_dir``: the global policy as a weights-only ``FederatedPG`` /
    ``FederatedPPO`` file (neural task; ``save(..., format="safetensors")``, read with
    ``load(path, weights_only=True)``) or a ``.npy`` (tabular task), a resumable checkpoint after every round
    (``checkpoint.npz``: plain arrays, read without pickles), ``rounds.jsonl`` and the SB3 logger's files. Nothing
    the server writes needs unpickling to be read: these files travel between parties.

    :param config: the run configuration
    :param n_agents: agents in the federation (sets the neural template's environment)
    """

    def __init__(self, config: FlowerRunConfig, n_agents: int) -> None:
        self.config = config
        self.dir = pathlib.Path(config.output_dir)
        make_folder(self.dir)
        self.checkpoint_path = self.dir / "checkpoint.npz"
        self.rounds_path = self.dir / "rounds.jsonl"
        self._lock = _claim_folder(self.dir)
        if not config.resume:
            _set_aside_earlier_run(self.dir)
        self.template = make_agent_model(config, 0, max(n_agents, 1)) if config.task == "neural" else None
        formats = [name for name in config.log_formats if name != "wandb"]
        if "wandb" in config.log_formats:
            from sb3_fedpg.common.wandb_logger import configure_wandb_logger

            settings = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()}
            self.logger = configure_wandb_logger(
                folder=self.dir, project=config.wandb_project, format_strings=formats, config=settings
            )
        else:
            from stable_baselines3.common.logger import configure

            self.logger = configure(str(self.dir), formats)

    def close(self) -> None:
        """Close the logger and give output-dir back (another server may use it now)."""
        self.logger.close()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    @property
    def model_path(self) -> pathlib.Path:
        """Where the global policy is saved."""
        return self.dir / ("model.zip" if self.config.task == "neural" else "params.npy")

    def initial_params(self) -> np.ndarray:
        """:return: ``θ̄_0``: the template model's actor (neural) or zeros (tabular, float64)"""
        if self.template is not None:
            return self.template.get_global_parameters().cpu().numpy()
        return np.zeros(self.config.tabular_n_states * self.config.tabular_n_actions)

    @property
    def vec_normalize_path(self) -> pathlib.Path:
        """Where the merged observation statistics are saved (``normalize-obs``; ``FederatedVecNormalize.load`` reads it)."""
        return self.dir / "vecnormalize.pkl"

    def initial_obs_moments(self) -> dict[str, Any]:
        """:return: the agents' initial observation statistics (``normalize-obs``), from the template's env"""
        assert self.template is not None, "normalize-obs is for the neural task"
        return self.template.env.global_moments()

    def save(
        self, params: np.ndarray, history: list[np.ndarray], server_round: int, obs_moments: dict[str, Any] | None = None
    ) -> None:
        """
        Save the global policy and the resumable checkpoint (both atomically), and with ``normalize-obs`` the merged
        observation statistics (``vecnormalize.pkl``: load it with ``FederatedVecNormalize.load(path, env)``).

        :param params: ``θ̄`` after ``server_round`` rounds
        :param history: ``θ̄_0 … θ̄_t``
        :param server_round: rounds completed (skipped rounds included)
        :param obs_moments: the merged observation statistics (``None``: no observation normalisation)
        """
        if self.template is not None:
            self.template.set_global_parameters(params)
            # Weights-only: a file other parties open, so opening it must not run anything (docs/robustness.md).
            self.template.save(self.model_path, format="safetensors")
            if obs_moments is not None:
                import pickle

                wrapper = self.template.env
                wrapper.set_global_moments(obs_moments)
                atomic_write(self.vec_normalize_path, lambda f: pickle.dump(wrapper, f))
        else:
            atomic_write(self.model_path, lambda f: np.save(f, params))
        fingerprint = json.dumps(_fingerprint(self.config), sort_keys=True)
        atomic_write(
            self.checkpoint_path,
            lambda f: np.savez(f, params=params, history=np.stack(history), round=server_round, config=fingerprint),
        )

    def load_checkpoint(self) -> tuple[np.ndarray, list[np.ndarray], int] | None:
        """:return: ``(θ̄, history, rounds done)`` from a compatible checkpoint, else ``None``"""
        if not self.checkpoint_path.exists():
            return None
        data = load_arrays(self.checkpoint_path, ("params", "history", "round", "config"))
        if json.loads(str(data["config"])) != _fingerprint(self.config):
            raise ValueError(
                f"{self.checkpoint_path} was written by a run with other settings; use another output-dir or resume=false"
            )
        if not (np.isfinite(data["params"]).all() and np.isfinite(data["history"]).all()):
            raise ValueError(
                f"{self.checkpoint_path} holds a non-finite global policy (NaN/inf): the run that wrote it diverged or the "
                "file is corrupt. Resume from a copy of an earlier output-dir, or start over with resume=false."
            )
        return data["params"], list(data["history"]), int(data["round"])

    def record_round(self, summary: dict[str, Any]) -> None:
        """
        Append the round's summary to ``rounds.jsonl``.

        :param summary: JSON-serialisable round summary
        """
        with open(self.rounds_path, "a") as file:
            file.write(json.dumps(summary) + "\n")


#: What a server run writes into output-dir (a fresh run sets an earlier run's aside, see _set_aside_earlier_run).
RUN_FILES = ("checkpoint.npz", "rounds.jsonl", "model.zip", "params.npy", "vecnormalize.pkl", "progress.csv")


def _claim_folder(folder: pathlib.Path) -> Any:
    """
    Hold ``folder/.server.lock`` (an ``flock``, released by the kernel when the process ends, whatever the end) so
    that two servers never write into one output-dir at once.

    :param folder: the output-dir
    :return: the open lock file (``None`` where ``fcntl`` does not exist: no lock)
    :raises RuntimeError: when another server holds it
    """
    try:
        import fcntl
    except ImportError:  # not on Windows
        return None
    handle = open(folder / ".server.lock", "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        handle.close()
        raise RuntimeError(
            f"output-dir {folder} is in use by another running server: two runs would overwrite each other's model, "
            "checkpoint and rounds.jsonl. Give this run its own output-dir."
        ) from error
    return handle


def _set_aside_earlier_run(folder: pathlib.Path) -> pathlib.Path | None:
    """
    A fresh run (``resume=false``) in an output-dir that holds an earlier run's files moves them into
    ``earlier-run-<time>/`` there, instead of overwriting them (and appending to their ``rounds.jsonl``).

    :param folder: the output-dir
    :return: where they went (``None``: there were none)
    """
    import time

    found = [folder / name for name in RUN_FILES if (folder / name).exists()]
    if not found:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder / f"earlier-run-{stamp}"
    suffix = 1
    while target.exists():
        suffix += 1
        target = folder / f"earlier-run-{stamp}-{suffix}"
    target.mkdir()
    for path in found:
        path.rename(target / path.name)
    import logging

    from flwr.common.logger import log

    log(
        logging.WARNING,
        "output-dir %s held an earlier run's files: moved to %s (pass resume=true to continue a run instead)",
        folder,
        target,
    )
    return target


def load_arrays(path: str | pathlib.Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """
    Read a ``.npz`` the server wrote, refusing pickles (``np.load(allow_pickle=False)``), with a clear error for a file
    that is not one, lacks an entry, or holds an object (pickled) array.

    :param path: the ``.npz``
    :param names: the arrays it must hold
    :return: those arrays by name
    :raises ValueError: naming the file and what is wrong; nothing in it was unpickled, and it is not modified
    """
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle (and refuse it): say what it is
        raise ValueError(f"{path} is not a readable checkpoint (not an .npz archive); it was not modified.")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = sorted(set(names) - set(data.files))
            if missing:
                raise ValueError(f"{path} is not a checkpoint of this server: it lacks {missing}; it was not modified.")
            return {name: data[name] for name in names}
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {error}); it was not modified."
        ) from error
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise
        raise ValueError(
            f"{path} holds a pickled object array, which is never unpickled (a checkpoint this server wrote holds plain "
            "arrays only); it was not modified."
        ) from error


def _fingerprint(config: FlowerRunConfig) -> dict[str, Any]:
    # What must match to resume: the problem and the algorithm, not the run length or the outputs.
    skip = {
        "num_rounds",
        "resume",
        "output_dir",
        "log_formats",
        "wandb_project",
        "eval_every",
        "eval_episodes",
        "wait_for_agents_s",
        "phase_timeout_s",
        "reply_poll_s",
        "num_agents",
    }
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in vars(config).items()
        if k not in skip and not k.startswith("fault")
    }
