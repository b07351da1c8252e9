"""
Saving and loading federated models: atomic files, clear errors, exact resume, and weights-only files to share.

:class:`FederatedPersistenceMixin` gives a federated SB3 algorithm ``save`` (atomic: temp file
+ rename), ``load`` (a corrupt, truncated or foreign file raises ``ValueError`` and is left as it
is) and ``save_checkpoint``/``load_checkpoint`` (everything needed to continue bit for bit).

Two file formats, told apart by their content (never by their name):

- ``save(path)`` (``format="sb3"``, the default): Stable-Baselines3's zip. Loading it unpickles (cloudpickle, and
  ``torch.load``) and so runs code stored in the file: for files you trust. Checkpoints are always this format (they
  hold the environment and the random states).
- ``save(path, format="safetensors")``: a weights-only zip of ``metadata.json`` and ``tensors.safetensors``
  (:mod:`sb3_fedpg.common.safe_format`). Loading it parses JSON and safetensors only. ``load`` always reads such a
  file safely; ``load(path, weights_only=True)`` also refuses any file that holds pickles.
"""

from __future__ import annotations

import contextvars
import io
import json
import math
import os
import pathlib
import pickle
import random
import warnings
import zipfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import GymEnv

from sb3_fedpg.common.files import atomic_write, make_folder, read_zip_json
from sb3_fedpg.common.safe_format import (
    MAX_METADATA_BYTES,
    PICKLED_FILE_HINT,
    WEIGHTS_FORMAT,
    UnsafeToSaveError,
    WeightsFileError,
    aggregator_to_json,
    file_kind,
    flatten_tensors,
    generator_from_json,
    generator_to_json,
    policy_kwargs_from_json,
    policy_kwargs_to_json,
    read_bundle,
    refuse,
    schedule_from_json,
    schedule_to_json,
    space_from_json,
    space_to_json,
    write_bundle,
)

if TYPE_CHECKING:
    from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm
    from sb3_fedpg.common.hyperparams import Hyperparams

SelfPersistent = TypeVar("SelfPersistent", bound="FederatedPersistenceMixin")

#: The two formats of :meth:`FederatedPersistenceMixin.save`.
SAVE_FORMATS = ("sb3", "safetensors")
#: Settings besides the hyperparameters that a weights file keeps (and ``load`` of one may change).
_WEIGHTS_SETTINGS = ("seed", "verbose", "stats_window_size")

# Kept importable from here (their home was this module).
__all__ = [
    "MAX_METADATA_BYTES",
    "SAVE_FORMATS",
    "WEIGHTS_FORMAT",
    "DeviceChangeWarning",
    "FederatedPersistenceMixin",
    "ThreadCountWarning",
    "UnsafeToSaveError",
    "WeightsFileError",
]
_space_from_json = space_from_json
_policy_kwargs_from_json = policy_kwargs_from_json


class ThreadCountWarning(UserWarning):
    """A checkpoint is resumed with another torch thread count than it was written with (not bit-identical)."""


class DeviceChangeWarning(UserWarning):
    """A checkpoint is resumed on another kind of device than it was written on (not bit-identical)."""


#: set while :meth:`FederatedPersistenceMixin.load` reads a file (SB3's ``load`` calls ``set_parameters`` with its tensors)
_loading_file: contextvars.ContextVar[bool] = contextvars.ContextVar("_loading_file", default=False)


class NonFiniteParametersError(FloatingPointError):
    """
    Tensors given to ``set_parameters`` (or in a file) hold NaN or inf; nothing was changed.

    :param message: what was refused
    :param names: the non-finite entries (``<object>.<entry>``)
    """

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


def nonfinite_entries(states: dict[str, Any]) -> list[str]:
    """
    :param states: state dicts by object name (nested dicts, e.g. optimiser states, are searched)
    :return: the floating-point tensors holding NaN or inf, as ``<object>.<entry>``, sorted
    """
    found = []
    stack = list(states.items())
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{key}.{k}", v) for k, v in value.items())
        elif isinstance(value, th.Tensor) and value.is_floating_point() and not bool(th.isfinite(value).all()):
            found.append(str(key))
    return sorted(found)


def _nonfinite_file_message(path: Any, names: list[str]) -> str:
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return (
        f"{path} holds non-finite values (NaN/inf) in {shown}: the run that wrote it diverged, or the file is corrupt. "
        "Load an earlier checkpoint. The file was not modified."
    )


def _check_same_use_sde(path: Any, saved: bool, kwargs: dict[str, Any]) -> None:
    """
    Refuse ``load(path, use_sde=...)`` switching gSDE on or off: the saved ``log_std`` has the other distribution's
    shape (gSDE's ``(latent_dim, action_dim)`` matrix, the plain Gaussian's vector). ``sde_sample_freq`` may change.
    """
    if "use_sde" in kwargs and bool(kwargs["use_sde"]) != saved:
        raise ValueError(
            f"use_sde={kwargs['use_sde']!r} cannot be set by load(): {path} was trained with use_sde={saved} and its "
            "log_std has that distribution's shape (gSDE: a (latent_dim, action_dim) matrix; otherwise one entry per "
            "action). Load it as it is, or train a new model."
        )


class FederatedPersistenceMixin(BaseAlgorithm):
    """Atomic ``save``, checked ``load``, weights-only files and resumable checkpoints for federated algorithms."""

    # Declared for the type checker; each algorithm sets them (the class attribute, the two in its constructor).
    hyperparams_class: ClassVar[type[Hyperparams]]
    n_agents: int | None
    n_envs_per_agent: int

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
        format: str = "sb3",
    ) -> None:
        """
        Save the model to a zip file, atomically: a crash mid-write never leaves a corrupt file
        at ``path`` (the previous file, if any, stays intact until the new one is complete).

        :param path: file path (``.zip`` is appended when it has no suffix) or a writable buffer
        :param exclude: names of attributes to exclude in addition to the default ones (``format="sb3"`` only)
        :param include: names of attributes that might be excluded but should be included anyway (``format="sb3"``
            only)
        :param format: ``"sb3"``: Stable-Baselines3's zip, whose loading unpickles (for files you trust);
            ``"safetensors"``: a weights-only file (``metadata.json`` + ``tensors.safetensors``) that loads without
            running anything from it — the format to share a model in. Its policy, local critics, every optimiser
            state, the server's memory, schedules, counters and the model's own random generators are kept, so
            training goes on as from the original
        :raises UnsafeToSaveError: (``format="safetensors"``, a ``ValueError``) for an attribute a weights-only file
            cannot describe (a lambda schedule, a custom class or aggregator, an attack), naming it; nothing is written
        """
        if format not in SAVE_FORMATS:
            raise ValueError(f"unknown format {format!r}: choose one of {SAVE_FORMATS}.")
        if format == "safetensors":
            if exclude is not None or include is not None:
                raise ValueError("exclude/include apply to format='sb3' only: a weights-only file keeps a fixed content.")
            self._save_weights_only(path)
            return
        if isinstance(path, io.BufferedIOBase):
            super().save(path, exclude, include)
            return
        final = pathlib.Path(path)
        if final.suffix == "":
            final = final.with_suffix(".zip")
        make_folder(final.parent)
        atomic_write(final, lambda file: super(FederatedPersistenceMixin, self).save(file, exclude, include))

    @classmethod
    def load(
        cls: type[SelfPersistent],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        weights_only: bool = False,
        **kwargs: Any,
    ) -> SelfPersistent:
        """
        Load a model saved with :meth:`save`; a corrupt or truncated file raises ``ValueError``
        (and is left as it is).

        The format is read from the file's content: a weights-only file (``save(..., format="safetensors")``) is
        always read without unpickling anything; an SB3 zip (``format="sb3"``, and every checkpoint) is unpickled,
        which runs code stored in it — unless ``weights_only=True``, which refuses it.

        :param path: path to the file (or a file-like object)
        :param env: the new environment to run the loaded model on (can be ``None`` for prediction only)
        :param device: device on which the code should run
        :param custom_objects: objects to replace when loading (see SB3's ``load``; a weights-only file holds no
            pickled objects, so they are not used for one)
        :param print_system_info: print the system info of the saved model and the current one (SB3 zips)
        :param force_reset: reset the env before training
        :param weights_only: refuse any file that holds pickles (``WeightsFileError``): the setting for files from
            elsewhere. With ``False`` (SB3's behaviour) an SB3 zip is unpickled: only for files you trust
        :param kwargs: extra arguments to change the model when loading (validated like the constructor's)
        :return: the loaded model
        :raises WeightsFileError: (a ``ValueError``) for a file that is not a valid weights-only file, or holds pickles
            while ``weights_only=True``; nothing in it was run and it is not modified
        """
        kind = file_kind(path)
        if kind == "weights":
            return cls._finite_or_refused(cls._load_weights_only(path, env, device, force_reset, kwargs), path)
        if weights_only:
            where = f"{path} was not loaded (weights_only=True)"
            if kind == "pickled":
                raise WeightsFileError(f"{where}: {PICKLED_FILE_HINT}")
            raise WeightsFileError(
                f"{where}: it is not a weights-only model file (not a zip archive with {'metadata.json'!r}; write one "
                "with save(..., format='safetensors')). The file was not modified."
            )
        problem = f"{path} is not a readable {cls.__name__} checkpoint (corrupt, truncated or from another algorithm)"
        if isinstance(path, str | pathlib.Path) and os.path.isfile(path) and not zipfile.is_zipfile(path):
            raise ValueError(f"{problem}: not a zip archive. The file was not modified.")
        if isinstance(path, str | pathlib.Path):
            cls._check_file_algorithm(path)
        if kwargs and isinstance(path, str | pathlib.Path):
            cls._check_load_kwargs(path, kwargs)
        token = _loading_file.set(True)
        try:
            model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        except NonFiniteParametersError as error:  # every SB3-zip tensor goes through set_parameters, checked there
            raise ValueError(_nonfinite_file_message(path, error.names)) from error
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, KeyError, RuntimeError, AssertionError) as error:
            missing = cls._missing_members(path) if isinstance(path, str | pathlib.Path) else []
            if missing:  # SB3's fallback reports another key ('policy.optimizer') whichever member is missing
                raise ValueError(
                    f"{problem}: it lacks {', '.join(missing)} (a {cls.__name__} file holds one member per saved object). "
                    "The file was not modified."
                ) from error
            raise ValueError(f"{problem}: {type(error).__name__}: {error}. The file was not modified.") from error
        finally:
            _loading_file.reset(token)
        if model.env is not None:
            # The env given (or saved) must split into the model's agents: each has its own critic and optimiser state.
            cast("FederatedAlgorithm", model)._check_env_split(model.env, for_training=False)  # every federated model is one
        return model

    def nonfinite_tensors(self) -> list[str]:
        """
        :return: the saved tensors (``<object>.<entry>``: policy, critics, optimiser states, ...) holding NaN or inf
        """
        return nonfinite_entries({name: getattr(self, name).state_dict() for name in self._get_torch_save_params()[0]})

    @classmethod
    def _finite_or_refused(cls, model: SelfPersistent, path: Any) -> SelfPersistent:
        bad = model.nonfinite_tensors()
        if bad:
            raise ValueError(_nonfinite_file_message(path, bad))
        return model

    @classmethod
    def _missing_members(cls, path: str | pathlib.Path) -> list[str]:
        """:return: the ``<object>.pth`` members an SB3 zip of this algorithm must hold but ``path`` lacks"""
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile):
            return []
        if "data" not in names:  # not an SB3 model zip at all (a truncated file can open as an embedded torch archive)
            return []
        # the list is the same for every instance of the class (no self needed)
        expected = cls._get_torch_save_params(cast(Any, None))[0]
        optional = set(getattr(cls, "_optional_torch_params", ()))
        return [f"{name}.pth" for name in expected if name not in optional and f"{name}.pth" not in names]

    @classmethod
    def _check_file_algorithm(cls, path: str | pathlib.Path) -> None:
        """
        Refuse a file written by another algorithm, from its JSON part (nothing is unpickled): its ``algorithm_name``,
        or for older files the hyperparameters it holds.
        """
        from sb3_fedpg.zoo import FEDERATED_ALGOS, get_algo_class

        data = read_zip_json(path)
        if data is None:
            return  # the load itself reports an unreadable file
        written_by = data.get("algorithm_name")
        if not isinstance(written_by, str):  # older files: the algorithm whose hyperparameters are all there
            candidates = [get_algo_class(name) for name in FEDERATED_ALGOS]
            matching = [c.__name__ for c in candidates if set(cast(Any, c).hyperparams_class.names()) <= set(data)]
            written_by = matching[0] if len(matching) == 1 else None
        if written_by is not None and written_by != cls.__name__:
            raise ValueError(
                f"{path} holds a {written_by} model, not a {cls.__name__}: load it with {written_by}.load(...). The file "
                "was not modified."
            )

    def set_parameters(
        self,
        load_path_or_dict: str | dict[str, Any],
        exact_match: bool = True,
        device: th.device | str = "auto",
    ) -> None:
        """
        Load the tensors of a file (or a dict of state dicts) into this model: SB3's ``set_parameters``, which reads
        an SB3 zip's tensors with ``torch.load(weights_only=True)``; a weights-only file's are read from safetensors.

        :param load_path_or_dict: a model file, or a dict of state dicts by attribute name
        :param exact_match: every saved object must be given (and no other)
        :param device: device the tensors are loaded on
        """
        from stable_baselines3.common.save_util import load_from_zip_file

        states: dict[str, Any]
        if isinstance(load_path_or_dict, dict):
            states, source = load_path_or_dict, "the state dicts given"
        elif file_kind(load_path_or_dict) == "weights":
            _, states = read_bundle(load_path_or_dict, f"{load_path_or_dict} is not a valid weights file")
            source = str(load_path_or_dict)
        else:  # an SB3 zip: its tensors, read as SB3's set_parameters reads them (weights only)
            _, params, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)
            states, source = cast(dict[str, Any], params), str(load_path_or_dict)
        # Checked before anything is loaded: a NaN policy would only fail later, in torch's distribution check.
        bad = nonfinite_entries(states)
        if bad:
            raise NonFiniteParametersError(
                f"set_parameters: {source} holds non-finite values (NaN/inf) in {', '.join(bad[:4])}; nothing was changed.",
                bad,
            )
        if _loading_file.get():
            # A file written before an optional object existed: it starts fresh, as in a new model. Only for a file
            # being loaded: a dict given by the caller lacking an object is refused with exact_match, as in SB3.
            optional = [n for n in getattr(self, "_optional_torch_params", ()) if n not in states]
            states = {**states, **{n: getattr(self, n).state_dict() for n in optional}}
        super().set_parameters(states, exact_match=exact_match, device=device)

    @classmethod
    def _check_load_kwargs(cls, path: str | pathlib.Path, kwargs: dict[str, Any]) -> None:
        """
        Refuse ``load(path, **kwargs)`` names the model does not have, and a change of ``n_agents`` (the file holds
        one critic and optimiser state per agent). Reads the file's JSON part only: nothing is unpickled.
        """
        import difflib

        data = read_zip_json(path)
        if data is None:
            return  # the load itself reports an unreadable file
        hyperparams = getattr(cls, "hyperparams_class", None)
        known = set(data) | set(hyperparams.names() if hyperparams is not None else ())
        for name in kwargs:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"load() got an unknown keyword argument {name!r} (not a setting of {cls.__name__}){hint}")
        _check_same_use_sde(path, bool(data.get("use_sde", False)), kwargs)
        saved = data.get("n_agents")
        if "n_agents" in kwargs and isinstance(saved, int) and kwargs["n_agents"] != saved:
            raise ValueError(
                f"n_agents={kwargs['n_agents']!r} cannot be set by load(): {path} holds {saved} agents (one critic and "
                f"optimiser state each). Load it as it is, or train a new model for {kwargs['n_agents']!r} agents."
            )

    # ------------------------------------------------------------------ weights-only model files
    def save_weights(self, path: str | pathlib.Path) -> pathlib.Path:
        """
        ``save(path, format="safetensors")``, returning the path written (kept from the first weights format).

        :param path: the file (``.zip`` is appended when it has no suffix)
        :return: the path written
        """
        return cast(pathlib.Path, self._save_weights_only(path))

    @classmethod
    def load_weights(
        cls: type[SelfPersistent],
        path: str | pathlib.Path,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        **kwargs: Any,
    ) -> SelfPersistent:
        """
        ``load(path, env, device, weights_only=True, **kwargs)``: a weights-only file, never anything pickled.

        :param path: the weights file
        :param env: the env to continue on (same spaces and agents; ``None`` for prediction only)
        :param device: device on which the code should run
        :param kwargs: hyperparameters to change (validated; ``n_agents`` and ``policy_kwargs`` cannot change)
        :return: the model, with its policy, critics and optimiser states
        """
        return cls.load(path, env=env, device=device, weights_only=True, **kwargs)

    def _weights_metadata(self) -> dict[str, Any]:
        """:return: everything but the tensors, as JSON (refusing, naming it, what JSON cannot describe)"""
        hyperparams = getattr(self, "hyperparams_class", None)
        values: dict[str, Any] = {}
        schedules: dict[str, Any] = {}
        for name in hyperparams.names() if hyperparams is not None else ():
            value = getattr(self, name)
            if name == "aggregator_kwargs":
                continue  # written with the aggregator, from the aggregator itself
            if name == "aggregator":
                values["aggregator"], values["aggregator_kwargs"] = aggregator_to_json(value)
                continue
            if callable(value):
                schedules[name] = schedule_to_json(value, name)
                continue
            if isinstance(value, np.generic):
                value = value.item()
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise refuse(name, f"is {value!r}, not a plain JSON value") from error
            values[name] = value
        attack = getattr(self, "attack", None)
        if attack is not None:
            raise refuse(
                "attack",
                f"is {attack!r} (a simulated adversary: code and a random stream)",
                "Set model.attack = None before saving.",
            )
        buffer_class = getattr(self, "rollout_buffer_class", None)
        # SB3's own classes take no keyword arguments beyond those the model sets: nothing to write for them
        if buffer_class not in (None, RolloutBuffer, DictRolloutBuffer) or getattr(self, "rollout_buffer_kwargs", None):
            raise refuse(
                "rollout_buffer_class",
                f"is {buffer_class!r} with rollout_buffer_kwargs={getattr(self, 'rollout_buffer_kwargs', None)!r} (code)",
                "Set model.rollout_buffer_class = None and model.rollout_buffer_kwargs = {} before saving (they do not "
                "change training).",
            )
        aliases = {policy_class: alias for alias, policy_class in self.policy_aliases.items()}
        if self.policy_class not in aliases:
            raise refuse(
                f"the policy class {self.policy_class.__name__}", "is code", f"Use one of {sorted(self.policy_aliases)}."
            )
        seed = getattr(self, "seed", None)
        ratio = getattr(self, "advantage_ratio", None)
        state = {
            "current_progress_remaining": float(self._current_progress_remaining),
            "n_updates": int(getattr(self, "_n_updates", 0)),
            "episode_num": int(getattr(self, "_episode_num", 0)),
            "advantage_scale": getattr(self, "advantage_scale", None),
            "advantage_ratio": None if ratio is None else [float(r) for r in ratio],
            "participation_rng": generator_to_json(self._participation_rng),  # type: ignore[attr-defined]
            "action_rng": generator_to_json(self._action_rng),  # type: ignore[attr-defined]
        }
        exploration = (
            # gSDE's settings (written only with gSDE: a plain model's file is as before)
            {"exploration": {"use_sde": True, "sde_sample_freq": int(self.sde_sample_freq)}} if self.use_sde else {}
        )
        return {
            **exploration,
            "format": WEIGHTS_FORMAT,
            "algorithm": type(self).__name__,
            "policy": aliases[self.policy_class],
            "observation_space": space_to_json(self.observation_space, "observation space"),
            "action_space": space_to_json(self.action_space, "action space"),
            "n_agents": self.n_agents,
            "n_envs_per_agent": self.n_envs_per_agent,
            "hyperparameters": values,
            "schedules": schedules,
            "policy_kwargs": policy_kwargs_to_json(self.policy_kwargs),
            "settings": {
                "seed": None if seed is None else int(seed),
                "verbose": int(self.verbose),
                "stats_window_size": int(self._stats_window_size),
            },
            "num_timesteps": int(self.num_timesteps),
            "n_rounds": int(getattr(self, "_n_rounds", 0)),
            "run_id": getattr(self, "run_id", None),
            "state": state,
            "torch_num_threads": th.get_num_threads(),
        }

    def _save_weights_only(self, path: str | pathlib.Path | io.BufferedIOBase) -> pathlib.Path | None:
        """
        Write the weights-only file (atomically to a path).

        :param path: a path (``.zip`` is appended when it has no suffix) or a writable buffer
        :return: the path written (``None`` for a buffer)
        """
        metadata = self._weights_metadata()
        states = {name: getattr(self, name).state_dict() for name in self._get_torch_save_params()[0]}
        tensors, metadata["tensors"] = flatten_tensors(states)
        if isinstance(path, io.BufferedIOBase):
            write_bundle(path, metadata, tensors)
            return None
        final = pathlib.Path(path)
        if final.suffix == "":
            final = final.with_suffix(".zip")
        make_folder(final.parent)
        atomic_write(final, lambda file: write_bundle(file, metadata, tensors))
        return final

    @classmethod
    def _load_weights_only(
        cls: type[SelfPersistent],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None,
        device: th.device | str,
        force_reset: bool,
        kwargs: dict[str, Any],
    ) -> SelfPersistent:
        """
        Build a model from a weights-only file: ``metadata.json`` is parsed as JSON (every hyperparameter validated as
        by the constructor), ``tensors.safetensors`` by safetensors; nothing from the file is executed.
        """
        where = f"{path} is not a valid {cls.__name__} weights file"
        metadata, tensors = read_bundle(path, where)
        if metadata.get("algorithm") != cls.__name__:
            raise WeightsFileError(f"{where}: metadata.json 'algorithm' says it holds a {metadata.get('algorithm')!r} model.")
        if not isinstance(metadata.get("policy"), str) or metadata["policy"] not in cls.policy_aliases:
            raise WeightsFileError(f"{where}: metadata.json 'policy' must be one of {sorted(cls.policy_aliases)}.")
        n_agents = metadata.get("n_agents")
        if not (isinstance(n_agents, int) and not isinstance(n_agents, bool) and 1 <= n_agents <= 1 << 20):
            raise WeightsFileError(f"{where}: metadata.json 'n_agents' must be a positive integer, got {n_agents!r}.")
        if "n_agents" in kwargs and kwargs["n_agents"] != n_agents:
            raise ValueError(f"n_agents={kwargs['n_agents']!r} cannot be set by load(): {path} holds {n_agents} agents.")
        observation_space = space_from_json(metadata.get("observation_space"), "observation_space")
        action_space = space_from_json(metadata.get("action_space"), "action_space")
        policy_kwargs = policy_kwargs_from_json(metadata.get("policy_kwargs", {}))
        if "policy_kwargs" in kwargs and kwargs.pop("policy_kwargs") != policy_kwargs:
            raise ValueError("policy_kwargs cannot be changed by load(): the tensors have the saved network's shape.")
        hyperparams = metadata.get("hyperparameters")
        if not isinstance(hyperparams, dict):
            raise WeightsFileError(f"{where}: metadata.json 'hyperparameters' must be an object.")
        names = set(cls.hyperparams_class.names()) if hasattr(cls, "hyperparams_class") else set(hyperparams)
        unknown = sorted(set(hyperparams) - names)
        if unknown:
            raise WeightsFileError(f"{where}: metadata.json 'hyperparameters' has unknown name(s) {unknown}.")
        schedules = metadata.get("schedules", {})
        if not (isinstance(schedules, dict) and set(schedules) <= names):
            raise WeightsFileError(f"{where}: metadata.json 'schedules' must be an object of hyperparameter names.")
        hyperparams = {**hyperparams, **{name: schedule_from_json(desc, name) for name, desc in schedules.items()}}
        unknown = sorted(set(kwargs) - names - {"verbose", "tensorboard_log", "use_sde", "sde_sample_freq"})
        if unknown:
            raise TypeError(f"load() got unknown keyword argument(s) {unknown}; known: {sorted(names)}")
        exploration = metadata.get("exploration", {"use_sde": False, "sde_sample_freq": -1})
        if not (
            isinstance(exploration, dict)
            and set(exploration) == {"use_sde", "sde_sample_freq"}
            and isinstance(exploration["use_sde"], bool)
            and isinstance(exploration["sde_sample_freq"], int)
            and not isinstance(exploration["sde_sample_freq"], bool)
        ):
            raise WeightsFileError(f"{where}: metadata.json 'exploration' must be {{use_sde: bool, sde_sample_freq: int}}.")
        _check_same_use_sde(path, exploration["use_sde"], kwargs)
        exploration = {**exploration, **{k: kwargs.pop(k) for k in ("use_sde", "sde_sample_freq") if k in kwargs}}
        extra = {name: kwargs.pop(name) for name in ("verbose", "tensorboard_log") if name in kwargs}
        settings = {**hyperparams, **kwargs, "n_agents": n_agents}
        try:
            cls.hyperparams_class(**settings)
        except ValueError as error:
            source = "load() keyword" if any(name in str(error) for name in kwargs) else "metadata.json"
            raise ValueError(f"{path}: {source}: {error}") from error
        saved = metadata.get("settings", {})
        if not isinstance(saved, dict):
            raise WeightsFileError(f"{where}: metadata.json 'settings' must be an object.")
        for key, value in saved.items():
            if key not in _WEIGHTS_SETTINGS or not (
                (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32)
                or (key == "seed" and value is None)
            ):
                raise WeightsFileError(
                    f"{where}: metadata.json 'settings' may hold {_WEIGHTS_SETTINGS} (integers), got {key!r}: {value!r}."
                )
        extra = {**{key: value for key, value in saved.items() if key != "stats_window_size"}, **extra}
        critics = tensors.get("critics", {}).get("params") if isinstance(tensors.get("critics"), dict) else None
        if th.is_tensor(critics) and critics.dim() >= 1 and critics.shape[0] != n_agents:
            raise WeightsFileError(
                f"{where}: metadata.json 'n_agents' is {n_agents}, the tensors hold {critics.shape[0]} critics."
            )
        model = cls(  # type: ignore[call-arg]  # the algorithm's constructor (BaseAlgorithm's lacks n_agents...)
            metadata["policy"],
            env=None,
            device=device,
            policy_kwargs=policy_kwargs,
            stats_window_size=saved.get("stats_window_size", 100),
            _init_setup_model=False,
            **exploration,
            **extra,
            **settings,
        )
        expected = model._get_torch_save_params()[0]
        optional = set(getattr(model, "_optional_torch_params", ()))  # written by later versions only: may be missing
        if not set(expected) - optional <= set(tensors) <= set(expected):
            raise WeightsFileError(f"{where}: the tensors must hold {sorted(expected)}, got {sorted(tensors)}.")
        model.observation_space, model.action_space = observation_space, action_space
        n_envs_per_agent = metadata.get("n_envs_per_agent")
        if isinstance(n_envs_per_agent, int) and not isinstance(n_envs_per_agent, bool) and n_envs_per_agent >= 1:
            model.n_envs_per_agent = n_envs_per_agent
        try:
            model._setup_model()
        except (TypeError, ValueError, AssertionError, RuntimeError, NotImplementedError) as error:
            raise WeightsFileError(
                f"{where}: metadata.json's spaces and policy_kwargs do not build a policy ({type(error).__name__}: {error})"
            ) from error
        for name in expected:
            if name not in tensors:
                continue
            try:
                getattr(model, name).load_state_dict(tensors[name])
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
                raise WeightsFileError(f"{where}: the tensors of {name!r} do not fit the model described: {error}") from error
        model._restore_weights_state(metadata, where)
        if env is not None:
            model.set_env(env, force_reset=force_reset)
        return model

    def _restore_weights_state(self, metadata: dict[str, Any], where: str) -> None:
        """Set the counters, schedule progress, advantage scale and generators a weights file keeps (checked)."""

        def bad(key: str, what: str, value: Any) -> WeightsFileError:
            return WeightsFileError(f"{where}: metadata.json {key!r} must be {what}, got {value!r:.80}.")

        def count(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0

        for key, attr in (("num_timesteps", "num_timesteps"), ("n_rounds", "_n_rounds")):
            value = metadata.get(key, 0)
            if not count(value):
                raise bad(key, "an integer >= 0", value)
            setattr(self, attr, value)
        run_id = metadata.get("run_id")
        if run_id is not None:  # which run wrote the file (absent in files written before run ids existed)
            if not (isinstance(run_id, str) and len(run_id) <= 64 and run_id.isalnum()):
                raise bad("run_id", "a short alphanumeric string", run_id)
            self.run_id = run_id
        state = metadata.get("state")
        if state is None:  # a file of the first format: counters only
            return
        if not isinstance(state, dict):
            raise bad("state", "an object", state)
        progress = state.get("current_progress_remaining", 1.0)
        # 1 - steps / total: below 0 once the last round overshoots the budget, as in SB3
        if isinstance(progress, bool) or not isinstance(progress, int | float) or not -1e9 < progress <= 1:
            raise bad("state.current_progress_remaining", "a number <= 1", progress)
        self._current_progress_remaining = float(progress)
        for key, attr in (("n_updates", "_n_updates"), ("episode_num", "_episode_num")):
            value = state.get(key, 0)
            if not count(value):
                raise bad(f"state.{key}", "an integer >= 0", value)
            setattr(self, attr, value)
        scale = state.get("advantage_scale")
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale)):
            raise bad("state.advantage_scale", "null or a finite number", scale)
        ratio = state.get("advantage_ratio")
        if ratio is not None and not (
            isinstance(ratio, list)
            and len(ratio) == self.n_agents
            and all(isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r) for r in ratio)
        ):
            raise bad("state.advantage_ratio", f"null or a list of {self.n_agents} finite numbers", ratio)
        self.advantage_scale = None if scale is None else float(scale)
        self.advantage_ratio = None if ratio is None else [float(r) for r in ratio]
        for key in ("participation_rng", "action_rng"):
            if key in state:
                setattr(self, f"_{key}", generator_from_json(state[key], f"state.{key}"))

    def save_checkpoint(self, path: str | pathlib.Path) -> None:
        """
        Save everything needed to continue training exactly: the model (global policy, local
        critics and optimiser states, counters, schedule progress, participation sampler), the
        RNG states of Python, NumPy and torch (the CPU's, and the GPU's when the model runs on one), and the
        environment with its internal state.

        Call it between rounds (e.g. from :class:`~sb3_fedpg.common.callbacks.RoundCheckpointCallback`).
        Written atomically like :meth:`save`. An env that cannot be pickled (e.g. MuJoCo) is
        left out with a warning: resuming then starts fresh episodes and is not bit-identical.

        :param path: checkpoint file
        """
        import cloudpickle

        if getattr(self, "_round_in_flight", False):
            raise RuntimeError(
                f"save_checkpoint({str(path)!r}) was called in the middle of a round (at {self.num_timesteps} env steps): "
                "the agents' local state is half-way through the round, so a resume from it would not continue the run "
                "exactly. Checkpoint at a round boundary: RoundCheckpointCallback, a RoundCallback's _on_round_end, or "
                "between learn() calls."
            )
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
            # On a GPU the rollout draws its actions from the device's generator: keep its state too.
            "torch_device_type": self.device.type,
            "torch_cuda_rng": th.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "env": env_state,
            # torch's CPU kernels reduce in a thread-count-dependent order: a resume with another count drifts.
            "torch_num_threads": th.get_num_threads(),
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
        threads = state.get("torch_num_threads")  # absent in checkpoints written before it was recorded
        if isinstance(threads, int) and threads != th.get_num_threads():
            warnings.warn(
                f"{path} was written by a process using {threads} torch thread(s), this one uses "
                f"{th.get_num_threads()}: torch's results depend on the thread count, so training resumed now is not "
                f"bit-identical to the uninterrupted run. Call torch.set_num_threads({threads}) before loading to "
                "continue exactly.",
                ThreadCountWarning,
                stacklevel=2,
            )
        saved_device = state.get("torch_device_type", "cpu")  # absent in checkpoints written before it was recorded
        if saved_device != model.device.type:
            warnings.warn(
                f"{path} was written on {saved_device}, this run uses {model.device.type}: the two draw different random "
                f"numbers and compute in another order, so training resumed now is not bit-identical to the uninterrupted "
                f"run. Pass device={saved_device!r} to load_checkpoint to continue exactly.",
                DeviceChangeWarning,
                stacklevel=2,
            )
        restored = env if env is not None else cloudpickle.loads(state["env"])
        # force_reset=False keeps the saved last observation: the episode goes on where it stopped.
        model.set_env(restored, force_reset=env is not None)
        random.setstate(state["python_rng"])
        np.random.set_state(state["numpy_rng"])  # noqa: NPY002
        th.set_rng_state(state["torch_rng"])
        if state.get("torch_cuda_rng") is not None and model.device.type == "cuda":
            th.cuda.set_rng_state(state["torch_cuda_rng"], model.device)
        return model
