"""
Round-level callbacks: SB3 callbacks that also hear about completed communication rounds.

SB3's callback events are per env step and per rollout; a federated round spans several
rollouts and only its end is a consistent state (global parameters aggregated, no agent
mid-way through its local steps). ``FederatedPG.learn`` calls :meth:`RoundCallback.on_round_end`
on every ``RoundCallback`` it was given (also inside a ``CallbackList``) after each round.
"""

from __future__ import annotations

import os
import pathlib
import re
import warnings
import zipfile
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

if TYPE_CHECKING:
    from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm
    from sb3_fedpg.common.federated_vec_env import FederatedVecEnv


class RoundCallback(BaseCallback):
    """
    Base class for callbacks with a round-end event.

    Constructed like SB3's ``BaseCallback``: ``verbose`` is the verbosity level (0 for no output, 1 for info messages).
    """

    def on_round_end(self) -> bool:
        """
        Called by ``FederatedPG`` after every completed round.

        :return: ``False`` to stop training
        """
        return self._on_round_end()

    def _on_round_end(self) -> bool:
        return True

    def _on_step(self) -> bool:
        return True


def fire_round_end(callback: BaseCallback) -> bool:
    """
    Call ``on_round_end`` on every :class:`RoundCallback` in a callback tree.

    :param callback: the callback given to ``learn`` (possibly a ``CallbackList``)
    :return: ``False`` if any of them asked to stop
    """
    if isinstance(callback, CallbackList):
        return all([fire_round_end(child) for child in callback.callbacks])
    if isinstance(callback, RoundCallback):
        return callback.on_round_end()
    return True


class RoundCheckpointCallback(RoundCallback):
    """
    Save a resumable checkpoint every ``save_freq`` rounds (the ``CheckpointCallback`` of rounds).

    Each file is written atomically (temp file + rename), so a crash at any moment leaves
    every existing checkpoint intact. Resume with ``FederatedPG.load_checkpoint`` and
    ``model.learn(total - model.num_timesteps, reset_num_timesteps=False)``: the result is
    bit-identical to an uninterrupted run with the same seed (for picklable envs).

    **Checkpoints belong to their run.** Each file records the model's ``run_id`` (kept by ``load`` and
    ``load_checkpoint``, so a resumed run is the same run). A folder (and prefix) that already holds another run's
    checkpoints is refused when training starts — two runs there would overwrite each other's rounds, prune each
    other's files, and ``latest_checkpoint`` would resume the wrong one. ``keep_last`` prunes this run's files only.

    :param save_freq: save every this many rounds
    :param save_path: folder for the checkpoints
    :param name_prefix: files are ``<save_path>/<name_prefix>_<round>_rounds.zip`` (a prefix with ``/`` writes
        into a sub-folder, and ``keep_last`` counts the files there)
    :param keep_last: keep only this many most recent checkpoints of this run (``None``: keep all)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages
    """

    def __init__(
        self, save_freq: int, save_path: str, name_prefix: str = "fedpg", keep_last: int | None = None, verbose: int = 0
    ) -> None:
        super().__init__(verbose)
        if save_freq < 1:
            raise ValueError(f"save_freq must be >= 1 round, got {save_freq}.")
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}.")
        self.save_freq = save_freq
        self.save_path = pathlib.Path(save_path)
        self.name_prefix = name_prefix
        self.keep_last = keep_last

    def _check_folder(self) -> None:
        run_id = cast("FederatedAlgorithm", self.model).run_id
        foreign = [p for p in list_checkpoints(self.save_path, self.name_prefix) if checkpoint_run_id(p) != run_id]
        if foreign:
            shown = ", ".join(p.name for p in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise ValueError(
                f"{self.save_path} already holds checkpoints of another run with the prefix {self.name_prefix!r} "
                f"({shown}): this run would overwrite and prune them. Resume that run with load_checkpoint("
                f"latest_checkpoint(...)), or give this one its own save_path or name_prefix (or delete those files)."
            )

    def _init_callback(self) -> None:
        self._check_folder()

    def _on_round_end(self) -> bool:
        model = cast("FederatedAlgorithm", self.model)  # round events come from federated algorithms only
        rounds = model._n_rounds
        if rounds % self.save_freq == 0:
            self._check_folder()  # another run may have started writing here meanwhile
            path = self.save_path / f"{self.name_prefix}_{rounds}_rounds.zip"
            model.save_checkpoint(path)
            if self.verbose >= 1:
                print(f"Saving checkpoint to {path}")
            if self.keep_last is not None:
                for old in list_checkpoints(self.save_path, self.name_prefix, model.run_id)[: -self.keep_last]:
                    old.unlink(missing_ok=True)
        return True


def checkpoint_run_id(path: str | pathlib.Path) -> str | None:
    """
    :param path: a model or checkpoint file written by ``save``/``save_checkpoint``
    :return: the ``run_id`` of the model that wrote it (``None``: unreadable, or written before run ids existed)
    """
    from sb3_fedpg.common.files import read_zip_json

    run_id = (read_zip_json(path) or {}).get("run_id")
    return run_id if isinstance(run_id, str) else None


def is_readable_checkpoint(path: str | pathlib.Path) -> bool:
    """
    :param path: a checkpoint file
    :return: whether it is a complete zip whose members all pass their CRC check (a file truncated by a full disk
        or a copy cut short is not)
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def _split_prefix(folder: str | pathlib.Path, name_prefix: str) -> tuple[pathlib.Path, str]:
    # A prefix may hold a sub-folder ("run1/fedpg"): the files are <folder>/run1/fedpg_<k>_rounds.zip.
    separators = "/" + (os.sep if os.sep != "/" else "") + (os.altsep or "")
    cut = max(name_prefix.rfind(sep) for sep in separators)
    if cut < 0:
        return pathlib.Path(folder), name_prefix
    return pathlib.Path(folder) / name_prefix[:cut], name_prefix[cut + 1 :]


def list_checkpoints(folder: str | pathlib.Path, name_prefix: str = "fedpg", run_id: str | None = None) -> list[pathlib.Path]:
    """
    :param folder: a checkpoint folder
    :param name_prefix: the callback's prefix (it may contain a sub-folder, ``"run1/fedpg"``)
    :param run_id: only the files of this run (``model.run_id``; ``None``: every run's)
    :return: the round checkpoints ``<folder>/<name_prefix>_<round>_rounds.zip``, oldest first
    """
    folder, base = _split_prefix(folder, name_prefix)
    pattern = re.compile(rf"{re.escape(base)}_(\d+)_rounds\.zip$")
    found = [(int(m.group(1)), p) for p in folder.glob("*.zip") if (m := pattern.match(p.name))]
    paths = [p for _, p in sorted(found)]
    return paths if run_id is None else [p for p in paths if checkpoint_run_id(p) == run_id]


def latest_checkpoint(
    folder: str | pathlib.Path, name_prefix: str = "fedpg", run_id: str | None = None
) -> pathlib.Path | None:
    """
    The checkpoint to resume from: the most recent *readable* one. A newer file that is truncated or corrupt (a
    full disk, a copy cut short) is skipped with a warning.

    :param folder: a checkpoint folder
    :param name_prefix: the callback's prefix
    :param run_id: only the files of this run (``None``: any run's; :class:`RoundCheckpointCallback` keeps one run
        per folder and prefix)
    :return: the most recent readable round checkpoint, or ``None``
    """
    found = list_checkpoints(folder, name_prefix, run_id)
    for path in reversed(found):
        if is_readable_checkpoint(path):
            return path
        warnings.warn(f"skipping the unreadable (truncated or corrupt) checkpoint {path}.", stacklevel=2)
    return None


class FederatedEvalCallback(RoundCallback):
    """
    Evaluate the policy on every agent's task, under each agent's own reward, every ``eval_freq`` env steps: the
    ``EvalCallback`` of a federation, writing an SB3-style ``evaluations.npz``.

    A federated algorithm is evaluated at the end of the first round that reaches each multiple of ``eval_freq``
    (only a round's end is a consistent state: no agent is mid-way through its local steps); an SB3 algorithm
    (A2C, PPO) at the env step that reaches it, as SB3's ``EvalCallback`` does. With ``eval_at_start``, the
    untrained policy is evaluated too, and the last policy always is (when training ends between two multiples).

    ``evaluations.npz`` holds ``timesteps`` ``(n_evals,)``; ``results_per_agent`` ``(n_evals, n_agents, n_episodes)``,
    every agent's episodic returns; ``results`` ``(n_evals, n_episodes)``, their mean over agents (SB3's key, which
    rl-zoo's plots read); ``ep_lengths_per_agent`` and ``ep_lengths`` alike. An agent's return at an evaluation is
    the mean over its episodes, and ``J̄``, the mean of those over agents, is what :func:`evaluate_agents`'s caller
    computes (same operations, same numbers: see :func:`sb3_fedpg.common.plotting.read_evaluations`).

    :param eval_env: the federated env to evaluate on (its ``n_envs_per_agent`` sub-environments give each agent's
        episodes); reset before each evaluation, seeded once by its builder
    :param eval_freq: evaluate every this many env steps (all agents together)
    :param log_path: folder for ``evaluations.npz`` (``None``: not written)
    :param n_episodes_per_env: complete episodes per sub-environment of ``eval_env``
    :param deterministic: use the deterministic action
    :param eval_at_start: also evaluate before the first step
    :param verbose: Verbosity level: 0 for no output, 1 for info messages
    """

    def __init__(
        self,
        eval_env: FederatedVecEnv,
        eval_freq: int,
        log_path: str | os.PathLike | None = None,
        n_episodes_per_env: int = 1,
        deterministic: bool = True,
        eval_at_start: bool = True,
        verbose: int = 1,
    ) -> None:
        super().__init__(verbose)
        if eval_freq < 1:
            raise ValueError(f"eval_freq must be >= 1 env step, got {eval_freq}.")
        if n_episodes_per_env < 1:
            raise ValueError(f"n_episodes_per_env must be >= 1, got {n_episodes_per_env}.")
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.log_path = None if log_path is None else pathlib.Path(log_path)
        self.n_episodes_per_env = n_episodes_per_env
        self.deterministic = deterministic
        self.eval_at_start = eval_at_start
        self.evaluations_timesteps: list[int] = []
        self.evaluations_returns: list[np.ndarray] = []
        self.evaluations_lengths: list[np.ndarray] = []
        self._next_eval = eval_freq

    def _on_training_start(self) -> None:
        self._next_eval = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
        if self.eval_at_start:
            self.evaluate()

    def _is_federated(self) -> bool:
        from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm

        return isinstance(self.model, FederatedAlgorithm)

    def _evaluate_if_due(self) -> bool:
        if self.num_timesteps >= self._next_eval:
            self._next_eval = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
            self.evaluate()
        return True

    def _on_step(self) -> bool:
        # Mid-round for a federated algorithm (the agents' local parameters are in use): wait for the round's end.
        return True if self._is_federated() else self._evaluate_if_due()

    def _on_round_end(self) -> bool:
        return self._evaluate_if_due()

    def _on_training_end(self) -> None:
        if not self.evaluations_timesteps or self.evaluations_timesteps[-1] != self.num_timesteps:
            self.evaluate()

    def evaluate(self) -> np.ndarray:
        """
        Evaluate now, record ``eval/`` scalars and write ``evaluations.npz``.

        :return: each agent's mean return, shape ``(n_agents,)``
        """
        from sb3_fedpg.common.evaluation import agent_means, evaluate_agent_episodes

        episodes = evaluate_agent_episodes(self.model, self.eval_env, self.n_episodes_per_env, self.deterministic)
        per_agent = agent_means(episodes.returns, self.n_episodes_per_env)
        self.evaluations_timesteps.append(self.num_timesteps)
        self.evaluations_returns.append(episodes.returns)
        self.evaluations_lengths.append(episodes.lengths)
        if self.log_path is not None:
            self.save(self.log_path / "evaluations.npz")
        mean_return = float(per_agent.mean())
        self.logger.record("eval/mean_reward", mean_return)
        self.logger.record("eval/mean_ep_length", float(episodes.lengths.mean()))
        for i, value in enumerate(per_agent):
            self.logger.record(f"eval/agent_{i}/mean_reward", float(value))
        if self.verbose >= 1:
            print(
                f"Eval num_timesteps={self.num_timesteps}, mean over agents of their returns: {mean_return:.2f} "
                f"(agents: {', '.join(f'{v:.1f}' for v in per_agent)})"
            )
        return per_agent

    def arrays(self) -> dict[str, Any]:
        """:return: the content of ``evaluations.npz`` so far"""
        returns = np.array(self.evaluations_returns)
        lengths = np.array(self.evaluations_lengths)
        return {
            "timesteps": np.array(self.evaluations_timesteps, dtype=np.int64),
            "results": returns.mean(axis=1),
            "ep_lengths": lengths.mean(axis=1),
            "results_per_agent": returns,
            "ep_lengths_per_agent": lengths,
            "n_episodes_per_env": np.int64(self.n_episodes_per_env),
        }

    def save(self, path: str | os.PathLike) -> None:
        """
        Write ``evaluations.npz`` (atomically: a crash never leaves a half-written file).

        :param path: the file
        """
        from sb3_fedpg.common.files import atomic_write

        arrays = self.arrays()
        atomic_write(path, lambda file: np.savez(file, **arrays))
