"""
Saving and loading federated models: atomic files, clear errors, exact resume.

:class:`FederatedPersistenceMixin` gives a federated SB3 algorithm ``save`` (atomic: temp file
+ rename), ``load`` (a corrupt, truncated or foreign file raises ``ValueError`` and is left as it
is) and ``save_checkpoint``/``load_checkpoint`` (everything needed to continue bit for bit).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import pickle
import random
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import GymEnv

from sb3_fedpg.common.files import atomic_write, make_folder

if TYPE_CHECKING:
    from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm
    from sb3_fedpg.common.hyperparams import Hyperparams

SelfPersistent = TypeVar("SelfPersistent", bound="FederatedPersistenceMixin")

#: The pickle-free model format of :meth:`FederatedPersistenceMixin.save_weights`.
WEIGHTS_FORMAT = "sb3_fedpg.weights/1"
#: Largest ``metadata.json`` accepted (a JSON bomb is refused before it is parsed).
MAX_METADATA_BYTES = 1 << 20
#: Largest space (values of a Box, ``n`` of a Discrete) and network a weights file may describe: the model is built
#: before the tensors are loaded into it, so a file must not be able to make it allocate without bound.
MAX_SPACE_SIZE = 1 << 16
MAX_LAYER_WIDTH = 1 << 12
MAX_LAYERS = 16
#: Most entries of a Dict observation space a weights file may describe.
MAX_DICT_SPACES = 16
#: ``policy_kwargs`` entries a weights file may set, with their check.
_BOOL_POLICY_KWARGS = ("ortho_init", "full_std", "use_expln", "squash_output", "share_features_extractor", "normalize_images")

#: Classes a weights file may name in ``policy_kwargs`` (by name, from these tables only).
_ACTIVATIONS = {
    cls.__name__: cls
    for cls in (th.nn.Tanh, th.nn.ReLU, th.nn.ELU, th.nn.LeakyReLU, th.nn.GELU, th.nn.SiLU, th.nn.Sigmoid, th.nn.Identity)
}
_OPTIMIZERS = {cls.__name__: cls for cls in (th.optim.Adam, th.optim.AdamW, th.optim.RMSprop, th.optim.SGD)}
_CLASS_KWARGS: dict[str, Mapping[str, type]] = {"activation_fn": _ACTIVATIONS, "optimizer_class": _OPTIMIZERS}


class ThreadCountWarning(UserWarning):
    """A checkpoint is resumed with another torch thread count than it was written with (not bit-identical)."""


class DeviceChangeWarning(UserWarning):
    """A checkpoint is resumed on another kind of device than it was written on (not bit-identical)."""


class WeightsFileError(ValueError):
    """A weights file that is not a valid pickle-free model file (nothing in it was executed)."""


def _json_float(value: float) -> float | str:
    return value if np.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")


def _space_to_json(space: Any, what: str, nested: bool = False) -> dict[str, Any]:
    from gymnasium import spaces

    if isinstance(space, spaces.Dict) and not nested:  # one level, as SB3's MultiInputPolicy takes
        return {"type": "Dict", "spaces": {str(k): _space_to_json(v, f"{what}[{k!r}]", True) for k, v in space.items()}}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": [_json_float(float(v)) for v in np.ravel(space.low)],
            "high": [_json_float(float(v)) for v in np.ravel(space.high)],
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1 and not np.any(space.start):
        return {"type": "MultiDiscrete", "nvec": [int(k) for k in space.nvec]}
    if isinstance(space, spaces.MultiBinary) and isinstance(space.n, int | np.integer):
        return {"type": "MultiBinary", "n": int(space.n)}
    raise ValueError(
        f"save_weights: the {what} {space} cannot be described as JSON (Box, Discrete, one-dimensional MultiDiscrete, "
        "MultiBinary, and a Dict of those only)."
    )


def _space_from_json(desc: Any, what: str, nested: bool = False) -> Any:
    from gymnasium import spaces

    def bad(why: str) -> WeightsFileError:
        return WeightsFileError(f"metadata.json: {what}: {why}")

    if not isinstance(desc, dict):
        raise bad(f"expected an object, got {type(desc).__name__}")
    kind = desc.get("type")
    if kind == "Dict" and not nested:
        items = desc.get("spaces")
        if not (isinstance(items, dict) and 1 <= len(items) <= MAX_DICT_SPACES and all(isinstance(k, str) for k in items)):
            raise bad(f"'spaces' must be an object of 1 to {MAX_DICT_SPACES} named spaces")
        subspaces = {key: _space_from_json(sub, f"{what}[{key!r}]", True) for key, sub in items.items()}
        if sum(int(np.prod(sub.shape)) if sub.shape else 1 for sub in subspaces.values()) > MAX_SPACE_SIZE:
            raise bad(f"the Dict's spaces are too large together (at most {MAX_SPACE_SIZE} values)")
        return spaces.Dict(subspaces)
    if kind == "Discrete":
        n, start = desc.get("n"), desc.get("start", 0)
        if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_SPACE_SIZE):
            raise bad(f"'n' must be an integer in [1, {MAX_SPACE_SIZE}], got {n!r}")
        if not (isinstance(start, int) and not isinstance(start, bool) and abs(start) <= 2**31):
            raise bad(f"'start' must be an integer, got {start!r}")
        return spaces.Discrete(n, start=start)
    if kind == "MultiDiscrete":
        nvec = desc.get("nvec")
        if not (
            isinstance(nvec, list)
            and 1 <= len(nvec) <= MAX_SPACE_SIZE
            and all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_SPACE_SIZE for k in nvec)
        ):
            raise bad(f"'nvec' must be a list of 1 to {MAX_SPACE_SIZE} integers in [1, {MAX_SPACE_SIZE}], got {nvec!r}")
        return spaces.MultiDiscrete(nvec)
    if kind == "MultiBinary":
        n = desc.get("n")
        if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_SPACE_SIZE):
            raise bad(f"'n' must be an integer in [1, {MAX_SPACE_SIZE}], got {n!r}")
        return spaces.MultiBinary(n)
    if kind == "Box":
        shape, dtype = desc.get("shape"), desc.get("dtype")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d for d in shape)):
            raise bad(f"'shape' must be a list of positive integers, got {shape!r}")
        size = int(np.prod(shape)) if shape else 1
        if size > MAX_SPACE_SIZE:
            raise bad(f"'shape' {shape} is too large (at most {MAX_SPACE_SIZE} values)")
        if dtype not in ("float32", "float64", "float16", "int64", "int32", "uint8"):
            raise bad(f"'dtype' must be a numeric dtype name, got {dtype!r}")
        bounds = []
        for key in ("low", "high"):
            values = desc.get(key)
            if not (
                isinstance(values, list)
                and len(values) == size
                and all((isinstance(v, int | float) and not isinstance(v, bool)) or v in ("inf", "-inf") for v in values)
            ):
                raise bad(f"'{key}' must be a list of {size} numbers (or 'inf'/'-inf')")
            bounds.append(np.array([float(v) for v in values], dtype=np.float64).reshape(shape))
        try:
            return spaces.Box(low=bounds[0].astype(dtype), high=bounds[1].astype(dtype), shape=tuple(shape), dtype=dtype)
        except (ValueError, TypeError, AssertionError) as error:
            raise bad(str(error)) from error
    raise bad(f"'type' must be 'Box', 'Discrete', 'MultiDiscrete', 'MultiBinary' (or, at the top, 'Dict'), got {kind!r}")


def _policy_kwargs_to_json(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in policy_kwargs.items():
        if key in _CLASS_KWARGS and isinstance(value, type):
            if _CLASS_KWARGS[key].get(value.__name__) is not value:
                raise ValueError(f"save_weights: policy_kwargs[{key!r}]={value} is not one of {sorted(_CLASS_KWARGS[key])}.")
            out[key] = value.__name__
            continue
        if isinstance(value, type):  # e.g. a custom features_extractor_class: code, which a weights file never holds
            raise ValueError(
                f"save_weights: policy_kwargs[{key!r}]={value.__name__} is a class, i.e. code, and a weights file holds "
                "no code. Share this model with save() (an SB3 zip: load it only from sources you trust)."
            )
        out[key] = value
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"save_weights: policy_kwargs must be plain JSON values (and class names): {error}") from error
    return out


def _layer_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= MAX_LAYERS
        and all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_LAYER_WIDTH for w in value)
    )


def _policy_kwargs_from_json(value: Any) -> dict[str, Any]:
    def bad(key: str, what: str) -> WeightsFileError:
        return WeightsFileError(f"metadata.json: policy_kwargs[{key!r}] must be {what}, got {value.get(key)!r}")

    if not isinstance(value, dict):
        raise WeightsFileError(f"metadata.json: policy_kwargs must be an object, got {type(value).__name__}")
    for key, item in value.items():
        if key == "net_arch":
            ok = _layer_list(item) or (
                isinstance(item, dict) and set(item) <= {"pi", "vf"} and all(_layer_list(v) for v in item.values())
            )
            if not ok:
                raise bad(key, f"a list of at most {MAX_LAYERS} layer sizes in [1, {MAX_LAYER_WIDTH}] (or {{pi, vf}} lists)")
        elif key in _BOOL_POLICY_KWARGS:
            if not isinstance(item, bool):
                raise bad(key, "true or false")
        elif key == "log_std_init":
            if isinstance(item, bool) or not isinstance(item, int | float) or not np.isfinite(item):
                raise bad(key, "a finite number")
        elif key == "optimizer_kwargs":
            if item is not None and not (
                isinstance(item, dict) and all(isinstance(v, int | float | bool | None) for v in item.values())
            ):
                raise bad(key, "an object of numbers")
        elif key not in _CLASS_KWARGS:
            raise WeightsFileError(f"metadata.json: policy_kwargs has an unknown entry {key!r}")
    out = dict(value)
    for key, table in _CLASS_KWARGS.items():
        if key in out:
            if not isinstance(out[key], str) or out[key] not in table:
                raise WeightsFileError(
                    f"metadata.json: policy_kwargs[{key!r}] must be one of {sorted(table)}, got {out[key]!r}"
                )
            out[key] = table[out[key]]
    return out


class FederatedPersistenceMixin(BaseAlgorithm):
    """Atomic ``save``, checked ``load`` and resumable checkpoints for federated algorithms."""

    # Declared for the type checker; each algorithm sets them (the class attribute, the two in its constructor).
    hyperparams_class: ClassVar[type[Hyperparams]]
    n_agents: int | None
    n_envs_per_agent: int

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
        if kwargs and isinstance(path, str | pathlib.Path):
            cls._check_load_kwargs(path, kwargs)
        try:
            model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, KeyError, RuntimeError, AssertionError) as error:
            raise ValueError(f"{problem}: {type(error).__name__}: {error}. The file was not modified.") from error
        if model.env is not None:
            # The env given (or saved) must split into the model's agents: each has its own critic and optimiser state.
            cast("FederatedAlgorithm", model)._check_env_split(model.env, for_training=False)  # every federated model is one
        return model

    @classmethod
    def _check_load_kwargs(cls, path: str | pathlib.Path, kwargs: dict[str, Any]) -> None:
        """
        Refuse ``load(path, **kwargs)`` names the model does not have, and a change of ``n_agents`` (the file holds
        one critic and optimiser state per agent). Reads the file's JSON part only: nothing is unpickled.
        """
        import difflib
        import json

        try:
            with zipfile.ZipFile(path) as archive:
                data = json.loads(archive.read("data"))
        except (zipfile.BadZipFile, KeyError, OSError, ValueError):
            return  # the load itself reports an unreadable file
        if not isinstance(data, dict):
            return
        hyperparams = getattr(cls, "hyperparams_class", None)
        known = set(data) | set(hyperparams.names() if hyperparams is not None else ())
        for name in kwargs:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"load() got an unknown keyword argument {name!r} (not a setting of {cls.__name__}){hint}")
        saved = data.get("n_agents")
        if "n_agents" in kwargs and isinstance(saved, int) and kwargs["n_agents"] != saved:
            raise ValueError(
                f"n_agents={kwargs['n_agents']!r} cannot be set by load(): {path} holds {saved} agents (one critic and "
                f"optimiser state each). Load it as it is, or train a new model for {kwargs['n_agents']!r} agents."
            )

    # ------------------------------------------------------------------ pickle-free model files
    def save_weights(self, path: str | pathlib.Path) -> pathlib.Path:
        """
        Save the model without any pickle, to share it: a zip of ``metadata.json`` (hyperparameters that are plain
        JSON values, the spaces described as JSON, agents, counters) and ``tensors.pt`` (plain tensors: the policy,
        the critics and every optimiser state). :meth:`load_weights` reads it with ``torch.load(weights_only=True)``
        and ``json.loads``: loading it runs no code from the file. Written atomically.

        A learning-rate schedule is saved as its current value; a custom (callable) aggregator and an attack
        are not saved (a warning says so).

        :param path: the file (``.zip`` is appended when it has no suffix)
        :return: the path written
        """
        hyperparams = getattr(self, "hyperparams_class", None)
        values: dict[str, Any] = {}
        left_out: list[str] = []
        for name in hyperparams.names() if hyperparams is not None else ():
            value = getattr(self, name)
            if name == "learning_rate" and callable(value):
                value = float(self.lr_schedule(self._current_progress_remaining))
                left_out.append("learning_rate (a schedule: saved as its current value)")
            elif name == "aggregator" and callable(value):
                from sb3_fedpg.common.aggregators import AGGREGATORS

                names = [key for key, cls in AGGREGATORS.items() if type(value) is cls]
                if not names:
                    left_out.append("aggregator (a custom callable)")
                    continue
                value = names[0]
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                left_out.append(name)
                continue
            values[name] = value
        if getattr(self, "attack", None) is not None:
            left_out.append("attack")
        if left_out:
            warnings.warn(f"save_weights: not saved as such: {', '.join(left_out)}.", stacklevel=2)
        aliases = {cls: alias for alias, cls in self.policy_aliases.items()}
        if self.policy_class not in aliases:
            raise ValueError(
                f"save_weights supports the named policies {sorted(self.policy_aliases)}, not {self.policy_class}."
            )
        metadata = {
            "format": WEIGHTS_FORMAT,
            "algorithm": type(self).__name__,
            "policy": aliases[self.policy_class],
            "observation_space": _space_to_json(self.observation_space, "observation space"),
            "action_space": _space_to_json(self.action_space, "action space"),
            "n_agents": self.n_agents,
            "n_envs_per_agent": self.n_envs_per_agent,
            "hyperparameters": values,
            "policy_kwargs": _policy_kwargs_to_json(self.policy_kwargs),
            "num_timesteps": int(self.num_timesteps),
            "n_rounds": int(getattr(self, "_n_rounds", 0)),
            "torch_num_threads": th.get_num_threads(),
        }
        tensors = {name: getattr(self, name).state_dict() for name in self._get_torch_save_params()[0]}
        buffer = io.BytesIO()
        th.save(tensors, buffer)
        text = json.dumps(metadata, allow_nan=False, indent=1).encode()

        def write(file: Any) -> None:
            with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("metadata.json", text)
                archive.writestr("tensors.pt", buffer.getvalue())

        final = pathlib.Path(path)
        if final.suffix == "":
            final = final.with_suffix(".zip")
        make_folder(final.parent)
        atomic_write(final, write)
        return final

    @classmethod
    def load_weights(
        cls: type[SelfPersistent],
        path: str | pathlib.Path,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        **kwargs: Any,
    ) -> SelfPersistent:
        """
        Load a file written by :meth:`save_weights`, executing nothing from it: ``metadata.json`` is parsed as JSON
        (every hyperparameter validated as by the constructor), ``tensors.pt`` is read with
        ``torch.load(weights_only=True)`` (tensors and plain containers only). The way to load models from others.

        :param path: the weights file
        :param env: the env to continue on (same spaces and agents; ``None`` for prediction only)
        :param device: device on which the code should run
        :param kwargs: hyperparameters to change (validated; ``n_agents`` and ``policy_kwargs`` cannot change)
        :return: the model, with its policy, critics and optimiser states
        :raises WeightsFileError: (a ``ValueError``) for a file that is not a valid weights file; it is not modified
        """
        where = f"{path} is not a valid {cls.__name__} weights file"
        if not os.path.isfile(path) or not zipfile.is_zipfile(path):
            raise WeightsFileError(f"{where}: not a zip archive (write one with save_weights()). The file was not modified.")
        try:
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("metadata.json")
                if info.file_size > MAX_METADATA_BYTES:
                    raise WeightsFileError(f"{where}: metadata.json is {info.file_size} bytes (at most {MAX_METADATA_BYTES}).")
                metadata = json.loads(archive.read("metadata.json"))
                tensor_bytes = archive.read("tensors.pt")
        except WeightsFileError:
            raise
        except (KeyError, zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError) as error:
            raise WeightsFileError(f"{where}: {type(error).__name__}: {error}. The file was not modified.") from error
        if not isinstance(metadata, dict) or metadata.get("format") != WEIGHTS_FORMAT:
            got = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
            raise WeightsFileError(f"{where}: metadata.json 'format' must be {WEIGHTS_FORMAT!r}, got {got!r}.")
        if metadata.get("algorithm") != cls.__name__:
            raise WeightsFileError(f"{where}: metadata.json 'algorithm' says it holds a {metadata.get('algorithm')!r} model.")
        if not isinstance(metadata.get("policy"), str) or metadata["policy"] not in cls.policy_aliases:
            raise WeightsFileError(f"{where}: metadata.json 'policy' must be one of {sorted(cls.policy_aliases)}.")
        n_agents = metadata.get("n_agents")
        if not (isinstance(n_agents, int) and not isinstance(n_agents, bool) and 1 <= n_agents <= 1 << 20):
            raise WeightsFileError(f"{where}: metadata.json 'n_agents' must be a positive integer, got {n_agents!r}.")
        if "n_agents" in kwargs and kwargs["n_agents"] != n_agents:
            raise ValueError(
                f"n_agents={kwargs['n_agents']!r} cannot be set by load_weights(): {path} holds {n_agents} agents."
            )
        observation_space = _space_from_json(metadata.get("observation_space"), "observation_space")
        action_space = _space_from_json(metadata.get("action_space"), "action_space")
        policy_kwargs = _policy_kwargs_from_json(metadata.get("policy_kwargs", {}))
        if "policy_kwargs" in kwargs and kwargs.pop("policy_kwargs") != policy_kwargs:
            raise ValueError("policy_kwargs cannot be changed by load_weights(): the tensors have the saved network's shape.")
        hyperparams = metadata.get("hyperparameters")
        if not isinstance(hyperparams, dict):
            raise WeightsFileError(f"{where}: metadata.json 'hyperparameters' must be an object.")
        names = set(cls.hyperparams_class.names()) if hasattr(cls, "hyperparams_class") else set(hyperparams)
        unknown = sorted(set(hyperparams) - names)
        if unknown:
            raise WeightsFileError(f"{where}: metadata.json 'hyperparameters' has unknown name(s) {unknown}.")
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"load_weights() got unknown keyword argument(s) {unknown}; known: {sorted(names)}")
        settings = {**hyperparams, **kwargs, "n_agents": n_agents}
        try:
            cls.hyperparams_class(**settings)
        except ValueError as error:
            source = "load_weights() keyword" if any(name in str(error) for name in kwargs) else "metadata.json"
            raise ValueError(f"{path}: {source}: {error}") from error
        try:
            tensors = th.load(io.BytesIO(tensor_bytes), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as error:
            raise WeightsFileError(
                f"{where}: tensors.pt holds something other than plain tensors, or is corrupt "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); nothing in it was run."
            ) from error
        critics = tensors.get("critics", {}).get("params") if isinstance(tensors, dict) else None
        if th.is_tensor(critics) and critics.dim() >= 1 and critics.shape[0] != n_agents:
            raise WeightsFileError(
                f"{where}: metadata.json 'n_agents' is {n_agents}, tensors.pt has {critics.shape[0]} critics."
            )
        model = cls(  # type: ignore[call-arg]  # the algorithm's constructor (BaseAlgorithm's lacks n_agents...)
            metadata["policy"], env=None, device=device, policy_kwargs=policy_kwargs, _init_setup_model=False, **settings
        )
        expected = model._get_torch_save_params()[0]
        optional = set(getattr(model, "_optional_torch_params", ()))  # written by later versions only: may be missing
        if not isinstance(tensors, dict) or not set(expected) - optional <= set(tensors) <= set(expected):
            got = sorted(tensors) if isinstance(tensors, dict) else type(tensors).__name__
            raise WeightsFileError(f"{where}: tensors.pt must hold {sorted(expected)}, got {got}.")
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
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
                raise WeightsFileError(f"{where}: tensors.pt[{name!r}] does not fit the model described: {error}") from error
        for key, attr in (("num_timesteps", "num_timesteps"), ("n_rounds", "_n_rounds")):
            value = metadata.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(model, attr, value)
        if env is not None:
            model.set_env(env)
        return model

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
