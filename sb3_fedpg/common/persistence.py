"""
Saving and loading federated models: atomic files, clear errors, exact resume.

:class:`FederatedPersistenceMixin` gives a federated SB3 algorithm ``save`` (atomic: temp file
+ rename), ``load`` (a corrupt, truncated or foreign file raises ``ValueError`` and is left as it
is) and ``save_checkpoint``/``load_checkpoint`` (everything needed to continue bit for bit).
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import random
import warnings
import zipfile
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import GymEnv

from sb3_fedpg.common.files import atomic_write

SelfPersistent = TypeVar("SelfPersistent", bound="FederatedPersistenceMixin")


class FederatedPersistenceMixin(BaseAlgorithm):
    """Atomic ``save``, checked ``load`` and resumable checkpoints for federated algorithms."""

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        Save the model to a zip file, atomically: a crash mid-write never leaves a corrupt file
        at ``path`` (the previous file, if any, stays intact until the new one is complete).

        :param path: file path (``.zip`` is appended when it has no suffix) or a writable buffer
        :param exclude: names of attributes to exclude in addition to the default ones
        :param include: names of attributes that might be excluded but should be included anyway
        """
        if isinstance(path, io.BufferedIOBase):
            super().save(path, exclude, include)
            return
        final = pathlib.Path(path)
        if final.suffix == "":
            final = final.with_suffix(".zip")
        final.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(final, lambda file: super(FederatedPersistenceMixin, self).save(file, exclude, include))

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfPersistent],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfPersistent:
        """
        Load a model saved with :meth:`save`; a corrupt or truncated file raises ``ValueError``
        (and is left as it is).

        :param path: path to the file (or a file-like object)
        :param env: the new environment to run the loaded model on (can be ``None`` for prediction only)
        :param device: device on which the code should run
        :param custom_objects: objects to replace when loading (see SB3's ``load``)
        :param print_system_info: print the system info of the saved model and the current one
        :param force_reset: reset the env before training
        :param kwargs: extra arguments to change the model when loading
        :return: the loaded model
        """
        problem = f"{path} is not a readable {cls.__name__} checkpoint (corrupt, truncated or from another algorithm)"
        if isinstance(path, str | pathlib.Path) and os.path.isfile(path) and not zipfile.is_zipfile(path):
            raise ValueError(f"{problem}: not a zip archive. The file was not modified.")
        try:
            return super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, KeyError, RuntimeError, AssertionError) as error:
            raise ValueError(f"{problem}: {type(error).__name__}: {error}. The file was not modified.") from error

    def save_checkpoint(self, path: str | pathlib.Path) -> None:
        """
        Save everything needed to continue training exactly: the model (global policy, local
        critics and optimiser states, counters, schedule progress, participation sampler), the
        RNG states of Python, NumPy and torch, and the environment with its internal state.

        Call it between rounds (e.g. from :class:`~sb3_fedpg.common.callbacks.RoundCheckpointCallback`).
        Written atomically like :meth:`save`. An env that cannot be pickled (e.g. MuJoCo) is
        left out with a warning: resuming then starts fresh episodes and is not bit-identical.

        :param path: checkpoint file
        """
        import cloudpickle

        try:
            env_state: bytes | None = cloudpickle.dumps(self.env)
        except Exception as error:  # any pickling failure means "not resumable bit for bit"
            warnings.warn(f"the env could not be saved in the checkpoint ({error}); a resumed run starts new episodes.")
            env_state = None
        self._resume_state = {
            "python_rng": random.getstate(),
            # SB3 seeds NumPy's legacy global generator, so that is the state to keep.
            "numpy_rng": np.random.get_state(),  # noqa: NPY002
            "torch_rng": th.get_rng_state(),
            "env": env_state,
        }
        try:
            self.save(path)
        finally:
            del self._resume_state

    @classmethod
    def load_checkpoint(
        cls: type[SelfPersistent], path: str | pathlib.Path, env: GymEnv | None = None, device: th.device | str = "auto"
    ) -> SelfPersistent:
        """
        Load a checkpoint written by :meth:`save_checkpoint`, ready to continue with
        ``model.learn(total_timesteps - model.num_timesteps, reset_num_timesteps=False)``.

        :param path: checkpoint file
        :param env: environment to continue on; ``None`` restores the one saved in the checkpoint
        :param device: device on which the code should run
        :return: the model, its env and the RNG states as they were when the checkpoint was written
        """
        import cloudpickle

        model = cls.load(path, env=None, device=device)
        state = model.__dict__.pop("_resume_state", None)
        if state is None:
            raise ValueError(f"{path} is a model file without resume state; write checkpoints with save_checkpoint().")
        if env is None and state["env"] is None:
            raise ValueError(f"{path} holds no environment (it could not be pickled); pass env= to continue training.")
        restored = env if env is not None else cloudpickle.loads(state["env"])
        # force_reset=False keeps the saved last observation: the episode goes on where it stopped.
        model.set_env(restored, force_reset=env is not None)
        random.setstate(state["python_rng"])
        np.random.set_state(state["numpy_rng"])  # noqa: NPY002
        th.set_rng_state(state["torch_rng"])
        return model
