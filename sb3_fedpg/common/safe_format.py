"""
The weights-only model file: a zip of ``metadata.json`` (plain JSON) and ``tensors.safetensors`` (safetensors).

Reading one parses JSON and safetensors and nothing else: no pickle, no cloudpickle, no ``torch.load``. Everything
a model holds that is not a tensor is described as JSON from fixed vocabularies — spaces (``Box``, ``Discrete``,
``MultiDiscrete``, ``MultiBinary`` and a ``Dict`` of them), schedules (SB3's ``ConstantSchedule`` /
``LinearSchedule``), classes by name from fixed tables, a named aggregator with its parameters, random generators'
states — and what cannot be described is refused when the file is written (:class:`UnsafeToSaveError`), never
dropped silently. :class:`~sb3_fedpg.common.persistence.FederatedPersistenceMixin` writes and reads it
(``save(path, format="safetensors")``, ``load(path, weights_only=True)``).
"""

from __future__ import annotations

import inspect
import io
import json
import math
import zipfile
from collections.abc import Mapping
from typing import Any, TypeGuard

import numpy as np
import torch as th
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

from sb3_fedpg.common.torch_optimizer import named_optimizers

#: The format written today (read: this one and ``sb3_fedpg.weights/1``, whose tensors were a ``torch.save`` file
#: read with ``torch.load(weights_only=True)``).
WEIGHTS_FORMAT = "sb3_fedpg.weights/2"
LEGACY_WEIGHTS_FORMAT = "sb3_fedpg.weights/1"
METADATA = "metadata.json"
TENSORS = "tensors.safetensors"
LEGACY_TENSORS = "tensors.pt"
#: Largest ``metadata.json`` accepted (a JSON bomb is refused before it is parsed).
MAX_METADATA_BYTES = 1 << 20
#: Largest space (values of a Box, ``n`` of a Discrete) and network a weights file may describe: the model is built
#: before the tensors are loaded into it, so a file must not be able to make it allocate without bound.
MAX_SPACE_SIZE = 1 << 16
MAX_LAYER_WIDTH = 1 << 12
MAX_LAYERS = 16
#: Most entries of a Dict observation space a weights file may describe.
MAX_DICT_SPACES = 16
#: Deepest nesting of the tensors' skeleton (state dicts of optimisers are three levels deep).
MAX_SKELETON_DEPTH = 16
#: ``policy_kwargs`` entries a weights file may set, with their check.
_BOOL_POLICY_KWARGS = (
    "ortho_init",
    "use_sde",
    "full_std",
    "use_expln",
    "squash_output",
    "share_features_extractor",
    "normalize_images",
)

#: Classes a weights file may name in ``policy_kwargs`` (by name, from these tables only).
_ACTIVATIONS = {
    cls.__name__: cls
    for cls in (th.nn.Tanh, th.nn.ReLU, th.nn.ELU, th.nn.LeakyReLU, th.nn.GELU, th.nn.SiLU, th.nn.Sigmoid, th.nn.Identity)
}
#: the agents' local optimisers (``policy_kwargs['optimizer_class']``): torch's and SB3's that they accept
_OPTIMIZERS = named_optimizers()
#: Most numbers in a list-valued ``optimizer_kwargs`` entry (Adam's ``betas``, Rprop's ``etas``/``step_sizes``).
MAX_KWARG_LIST = 4
_CLASS_KWARGS: dict[str, Mapping[str, type]] = {"activation_fn": _ACTIVATIONS, "optimizer_class": _OPTIMIZERS}

#: What the refusals at save time recommend for a file that only trusted people will open.
TRUSTED_FORMAT_HINT = "For a file only you (or people you trust) will load, use save(..., format='sb3')."
#: What the refusal of a pickle-bearing file under ``weights_only=True`` says.
PICKLED_FILE_HINT = (
    "this file contains pickled objects; load it with weights_only=False only if you trust its origin (it is an SB3 "
    "save file or checkpoint, and loading one runs code stored in it), or ask for a file written with "
    "save(..., format='safetensors')."
)


class WeightsFileError(ValueError):
    """A weights file that is not a valid weights-only model file (nothing in it was executed)."""


class UnsafeToSaveError(ValueError):
    """A model attribute that a weights-only file cannot describe (it would need code or a pickle)."""


def refuse(attribute: str, what: str, fix: str = "") -> UnsafeToSaveError:
    """
    :param attribute: the model attribute (``learning_rate``, ``policy_kwargs['features_extractor_class']``, ...)
    :param what: what it is, e.g. ``"is a function"``
    :param fix: how to make it describable (optional)
    :return: the error for ``save(..., format="safetensors")``, naming the attribute and what to do
    """
    fix = f" {fix}" if fix else ""
    return UnsafeToSaveError(
        f"save(format='safetensors'): {attribute} {what}, which a weights-only file cannot describe (it holds no code "
        f"and no pickles).{fix} {TRUSTED_FORMAT_HINT}"
    )


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------------------- spaces
def _json_float(value: float) -> float | str:
    return value if np.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")


def space_to_json(space: Any, what: str, nested: bool = False) -> dict[str, Any]:
    """
    :param space: a Gymnasium space
    :param what: its name, for the error
    :param nested: inside a ``Dict`` (which may not nest)
    :return: its JSON description
    :raises UnsafeToSaveError: for a space it cannot describe
    """
    from gymnasium import spaces

    if isinstance(space, spaces.Dict) and not nested:  # one level, as SB3's MultiInputPolicy takes
        return {"type": "Dict", "spaces": {str(k): space_to_json(v, f"{what}[{k!r}]", True) for k, v in space.items()}}
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
    raise refuse(
        f"the {what}",
        f"is {space}",
        "Box, Discrete, one-dimensional MultiDiscrete, MultiBinary and a Dict of those are described.",
    )


def space_from_json(desc: Any, what: str, nested: bool = False) -> Any:
    """
    :param desc: the JSON description
    :param what: the field's name, for the error
    :param nested: inside a ``Dict``
    :return: the space
    :raises WeightsFileError: naming the field, for a description that is wrong or too large
    """
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
        subspaces = {key: space_from_json(sub, f"{what}[{key!r}]", True) for key, sub in items.items()}
        if sum(int(np.prod(sub.shape)) if sub.shape else 1 for sub in subspaces.values()) > MAX_SPACE_SIZE:
            raise bad(f"the Dict's spaces are too large together (at most {MAX_SPACE_SIZE} values)")
        return spaces.Dict(subspaces)
    if kind == "Discrete":
        n, start = desc.get("n"), desc.get("start", 0)
        if not (_is_int(n) and 1 <= n <= MAX_SPACE_SIZE):
            raise bad(f"'n' must be an integer in [1, {MAX_SPACE_SIZE}], got {n!r}")
        if not (_is_int(start) and abs(start) <= 2**31):
            raise bad(f"'start' must be an integer, got {start!r}")
        return spaces.Discrete(n, start=start)
    if kind == "MultiDiscrete":
        nvec = desc.get("nvec")
        if not (
            isinstance(nvec, list)
            and 1 <= len(nvec) <= MAX_SPACE_SIZE
            and all(_is_int(k) and 1 <= k <= MAX_SPACE_SIZE for k in nvec)
        ):
            raise bad(f"'nvec' must be a list of 1 to {MAX_SPACE_SIZE} integers in [1, {MAX_SPACE_SIZE}], got {nvec!r}")
        return spaces.MultiDiscrete(nvec)
    if kind == "MultiBinary":
        n = desc.get("n")
        if not (_is_int(n) and 1 <= n <= MAX_SPACE_SIZE):
            raise bad(f"'n' must be an integer in [1, {MAX_SPACE_SIZE}], got {n!r}")
        return spaces.MultiBinary(n)
    if kind == "Box":
        shape, dtype = desc.get("shape"), desc.get("dtype")
        if not (isinstance(shape, list) and all(_is_int(d) and 0 < d for d in shape)):
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
                isinstance(values, list) and len(values) == size and all(_is_number(v) or v in ("inf", "-inf") for v in values)
            ):
                raise bad(f"'{key}' must be a list of {size} numbers (or 'inf'/'-inf')")
            bounds.append(np.array([float(v) for v in values], dtype=np.float64).reshape(shape))
        try:
            return spaces.Box(low=bounds[0].astype(dtype), high=bounds[1].astype(dtype), shape=tuple(shape), dtype=dtype)
        except (ValueError, TypeError, AssertionError) as error:
            raise bad(str(error)) from error
    raise bad(f"'type' must be 'Box', 'Discrete', 'MultiDiscrete', 'MultiBinary' (or, at the top, 'Dict'), got {kind!r}")


# ------------------------------------------------------------------------------------------------- policy_kwargs
def policy_kwargs_to_json(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    """
    :param policy_kwargs: the model's ``policy_kwargs``
    :return: their JSON description (classes by name from fixed tables), which :func:`policy_kwargs_from_json` accepts
    :raises UnsafeToSaveError: naming the entry it cannot describe
    """
    out: dict[str, Any] = {}
    for key, value in policy_kwargs.items():
        if key in _CLASS_KWARGS and isinstance(value, type):
            if _CLASS_KWARGS[key].get(value.__name__) is not value:
                raise refuse(f"policy_kwargs[{key!r}]={value}", f"is not one of {sorted(_CLASS_KWARGS[key])}")
            out[key] = value.__name__
            continue
        if isinstance(value, type):  # e.g. a custom features_extractor_class: code
            raise refuse(f"policy_kwargs[{key!r}]={value.__name__}", "is a class, i.e. code")
        out[key] = value
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise refuse("policy_kwargs", f"holds a value that is not plain JSON ({error})") from error
    try:  # never write a file that the loader refuses
        policy_kwargs_from_json(out)
    except WeightsFileError as error:
        raise refuse("policy_kwargs", str(error).removeprefix("metadata.json: policy_kwargs")) from error
    return out


def _layer_list(value: Any) -> bool:
    return (
        isinstance(value, list) and len(value) <= MAX_LAYERS and all(_is_int(w) and 1 <= w <= MAX_LAYER_WIDTH for w in value)
    )


def _plain_kwarg(value: Any, lists: bool = False) -> bool:
    """
    :param value: a keyword argument's value
    :param lists: also accept a list of at most :data:`MAX_KWARG_LIST` finite numbers
    :return: whether a weights file may hold it: a finite number (an integer at most ``MAX_LAYER_WIDTH``), a boolean,
        null
    """

    def finite(v: Any) -> bool:
        return abs(v) <= MAX_LAYER_WIDTH if _is_int(v) else _is_number(v) and math.isfinite(v)

    if isinstance(value, bool | None) or finite(value):
        return True
    return lists and isinstance(value, list | tuple) and len(value) <= MAX_KWARG_LIST and all(finite(v) for v in value)


def policy_kwargs_from_json(value: Any) -> dict[str, Any]:
    """
    :param value: the JSON description
    :return: the ``policy_kwargs`` (classes looked up in the fixed tables)
    :raises WeightsFileError: naming the entry
    """

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
            if not _is_number(item) or not np.isfinite(item):
                raise bad(key, "a finite number")
        elif key in ("optimizer_kwargs", "features_extractor_kwargs"):
            lists = key == "optimizer_kwargs"  # also short lists of numbers (betas=(0.9, 0.999))
            if item is not None and not (isinstance(item, dict) and all(_plain_kwarg(v, lists) for v in item.values())):
                raise bad(
                    key,
                    f"an object of finite numbers (integers at most {MAX_LAYER_WIDTH}), booleans or null (for "
                    f"optimizer_kwargs also lists of at most {MAX_KWARG_LIST} finite numbers)",
                )
        elif key not in _CLASS_KWARGS:
            raise WeightsFileError(f"metadata.json: policy_kwargs has an unknown entry {key!r}")
    out = dict(value)
    if isinstance(out.get("optimizer_kwargs"), dict):  # JSON has no tuples: betas=(0.9, 0.999) comes back a tuple
        out["optimizer_kwargs"] = {k: tuple(v) if isinstance(v, list) else v for k, v in out["optimizer_kwargs"].items()}
    for key, table in _CLASS_KWARGS.items():
        if key in out:
            if not isinstance(out[key], str) or out[key] not in table:
                raise WeightsFileError(
                    f"metadata.json: policy_kwargs[{key!r}] must be one of {sorted(table)}, got {out[key]!r}"
                )
            out[key] = table[out[key]]
    return out


# ----------------------------------------------------------------------------------------------------- schedules
def is_schedule(value: Any) -> bool:
    """:return: whether ``value`` is a schedule (a callable of the remaining progress) rather than a number"""
    return callable(value)


def schedule_to_json(value: Any, attribute: str) -> dict[str, Any]:
    """
    :param value: a schedule: SB3's ``ConstantSchedule`` or ``LinearSchedule`` (or a ``FloatSchedule`` of one)
    :param attribute: the hyperparameter, for the error
    :return: its JSON description
    :raises UnsafeToSaveError: for any other callable (a lambda, a custom class: code)
    """
    inner = value.value_schedule if type(value) is FloatSchedule else value
    if type(inner) is ConstantSchedule and _is_number(inner.val) and math.isfinite(inner.val):
        return {"type": "ConstantSchedule", "val": float(inner.val)}
    if type(inner) is LinearSchedule and all(
        _is_number(v) and math.isfinite(v) for v in (inner.start, inner.end, inner.end_fraction)
    ):
        return {"type": "LinearSchedule", "start": inner.start, "end": inner.end, "end_fraction": inner.end_fraction}
    kind = "a lambda" if getattr(inner, "__name__", "") == "<lambda>" else f"a {type(inner).__name__}"
    raise refuse(
        attribute,
        f"is {kind} (a schedule given as code)",
        "Use a number, or stable_baselines3.common.utils.LinearSchedule / ConstantSchedule (the zoo's lin_<start>).",
    )


def schedule_from_json(desc: Any, attribute: str) -> Any:
    """
    :param desc: the JSON description
    :param attribute: the hyperparameter, for the error
    :return: the schedule object
    :raises WeightsFileError: naming the hyperparameter
    """
    if isinstance(desc, dict) and desc.get("type") == "ConstantSchedule" and set(desc) == {"type", "val"}:
        if _is_number(desc["val"]) and math.isfinite(desc["val"]):
            return ConstantSchedule(float(desc["val"]))
    fields = ("start", "end", "end_fraction")
    if isinstance(desc, dict) and desc.get("type") == "LinearSchedule" and set(desc) == {"type", *fields}:
        if all(_is_number(desc[k]) and math.isfinite(desc[k]) for k in fields) and 0 < desc["end_fraction"] <= 1:
            return LinearSchedule(*(float(desc[k]) for k in fields))
    raise WeightsFileError(
        f"metadata.json: schedules[{attribute!r}] must be {{'type': 'ConstantSchedule', 'val': x}} or "
        f"{{'type': 'LinearSchedule', 'start': x, 'end': y, 'end_fraction': f}} with finite numbers, got {desc!r}"
    )


# --------------------------------------------------------------------------------------------------- aggregators
def aggregator_to_json(aggregator: Any) -> tuple[str, dict[str, Any]]:
    """
    :param aggregator: one of :data:`~sb3_fedpg.common.aggregators.AGGREGATORS`' classes, built
    :return: its name and every constructor parameter (so a directly built instance is described too)
    :raises UnsafeToSaveError: for a custom callable
    """
    from sb3_fedpg.common.aggregators import AGGREGATORS

    names = [key for key, cls in AGGREGATORS.items() if type(aggregator) is cls]
    if not names:
        raise refuse("aggregator", f"is a custom callable ({aggregator!r})", f"Use one of {sorted(AGGREGATORS)} by name.")
    parameters = inspect.signature(type(aggregator).__init__).parameters
    kwargs = {name: getattr(aggregator, name) for name in parameters if name != "self" and hasattr(aggregator, name)}
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise refuse("aggregator", f"has parameters that are not plain JSON ({error})") from error
    return names[0], kwargs


# -------------------------------------------------------------------------------------------- random generators
def generator_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """:return: the state of a NumPy ``Generator`` (PCG64: integers only)"""
    state = rng.bit_generator.state
    if state.get("bit_generator") != "PCG64":
        raise refuse(
            "a random generator", f"uses {state.get('bit_generator')!r}", "Only PCG64 (NumPy's default) is described."
        )
    return dict(state)


def generator_from_json(desc: Any, what: str) -> np.random.Generator:
    """
    :param desc: the JSON state
    :param what: the field's name, for the error
    :return: a PCG64 ``Generator`` in that state
    :raises WeightsFileError: naming the field
    """
    inner = desc.get("state") if isinstance(desc, dict) else None
    if not (
        isinstance(desc, dict)
        and set(desc) == {"bit_generator", "state", "has_uint32", "uinteger"}
        and desc["bit_generator"] == "PCG64"
        and isinstance(inner, dict)
        and set(inner) == {"state", "inc"}
        and all(_is_int(v) and 0 <= v < 2**128 for v in inner.values())
        and desc["has_uint32"] in (0, 1)
        and _is_int(desc["uinteger"])
        and 0 <= desc["uinteger"] < 2**32
    ):
        raise WeightsFileError(f"metadata.json: {what} must be a PCG64 generator state of integers, got {desc!r}")
    rng = np.random.default_rng()
    rng.bit_generator.state = desc
    return rng


# ------------------------------------------------------------------------------------------------------ tensors
def flatten_tensors(state: Any) -> tuple[dict[str, th.Tensor], Any]:
    """
    Nested state dicts (of modules and optimisers) as named tensors for safetensors plus a JSON skeleton.

    :param state: nested dicts (keys str or int), lists and tuples of tensors and JSON scalars
    :return: the tensors by path (CPU, contiguous, not sharing memory) and the skeleton: the structure with each tensor
        replaced by ``{"tensor": name}``
    :raises UnsafeToSaveError: for anything else in the state (naming where)
    """
    tensors: dict[str, th.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, th.Tensor):
            if path in tensors:
                raise refuse(f"the tensor at {path!r}", "has a name another tensor has")
            tensors[path] = value.detach().to("cpu", copy=True).contiguous()
            return {"tensor": path}
        if isinstance(value, dict):  # keys kept with their type (optimiser states are keyed by int)
            if not all(isinstance(k, str) or _is_int(k) for k in value):
                raise refuse(f"the state at {path!r}", "has keys that are neither strings nor integers")
            return {"dict": [[k, walk(v, f"{path}/{k}")] for k, v in value.items()]}
        if isinstance(value, list | tuple):
            return {type(value).__name__: [walk(v, f"{path}/{i}") for i, v in enumerate(value)]}
        if value is None or isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
            return {"value": value}
        raise refuse(f"the state at {path!r}", f"holds a {type(value).__name__} ({value!r})")

    return tensors, walk(state, "")


def unflatten_tensors(tensors: dict[str, th.Tensor], skeleton: Any) -> Any:
    """
    The inverse of :func:`flatten_tensors`, checking the skeleton (every tensor it names exists and is used once).

    :param tensors: the named tensors
    :param skeleton: the JSON skeleton
    :return: the nested state
    :raises WeightsFileError: for a skeleton that is malformed or does not fit the tensors
    """
    used: set[str] = set()

    def bad(why: str) -> WeightsFileError:
        return WeightsFileError(f"metadata.json: 'tensors' skeleton: {why}")

    def build(node: Any, depth: int) -> Any:
        if depth > MAX_SKELETON_DEPTH:
            raise bad(f"nested deeper than {MAX_SKELETON_DEPTH}")
        if not (isinstance(node, dict) and len(node) == 1):
            raise bad(f"a node must be an object with one entry, got {node!r:.80}")
        ((kind, value),) = node.items()
        if kind == "tensor":
            if not isinstance(value, str) or value not in tensors or value in used:
                raise bad(f"names tensor {value!r:.80}, which is not in {TENSORS} (or is named twice)")
            used.add(value)
            return tensors[value]
        if kind == "dict":
            if not (
                isinstance(value, list)
                and all(isinstance(p, list) and len(p) == 2 and (isinstance(p[0], str) or _is_int(p[0])) for p in value)
            ):
                raise bad("a 'dict' node must be a list of [key, node] pairs")
            return {k: build(v, depth + 1) for k, v in value}
        if kind in ("list", "tuple"):
            if not isinstance(value, list):
                raise bad(f"a '{kind}' node must be a list")
            items = [build(v, depth + 1) for v in value]
            return tuple(items) if kind == "tuple" else items
        if kind == "value":
            if value is None or isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
                return value
            raise bad(f"a 'value' node must be a JSON scalar, got {value!r:.80}")
        raise bad(f"unknown node kind {kind!r:.40}")

    state = build(skeleton, 0)
    if used != set(tensors):
        raise bad(f"{TENSORS} holds tensors the skeleton does not name: {sorted(set(tensors) - used)[:5]}")
    return state


def tensors_to_bytes(tensors: dict[str, th.Tensor]) -> bytes:
    """:return: the tensors as a safetensors file"""
    from safetensors.torch import save

    return save(tensors)


def tensors_from_bytes(data: bytes, where: str) -> dict[str, th.Tensor]:
    """
    :param data: a safetensors file's content
    :param where: the file, for the error
    :return: the named tensors (CPU)
    :raises WeightsFileError: for data that is not a safetensors file
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as error:
        raise WeightsFileError(
            f"{where}: {TENSORS} is not a valid safetensors file ({error}); the file was not modified."
        ) from error


# --------------------------------------------------------------------------------------------------------- files
def file_kind(path: Any) -> str | None:
    """
    What a model file is, from its content (never its name): ``"weights"`` (a weights-only file), ``"pickled"`` (an SB3
    save file or checkpoint: its ``data`` member holds pickles), or ``None`` (not a zip, or neither).

    :param path: a path or a seekable binary buffer (left at its start)
    :return: the kind
    """
    try:
        if isinstance(path, io.IOBase):
            start = path.tell()
            try:
                with zipfile.ZipFile(path) as archive:
                    names = set(archive.namelist())
            finally:
                path.seek(start)
        else:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None
    if "data" in names or any(name.endswith(".pth") for name in names):
        return "pickled"
    if METADATA in names:
        return "weights"
    return None


def write_bundle(file: Any, metadata: dict[str, Any], tensors: dict[str, th.Tensor]) -> None:
    """
    :param file: a writable binary file
    :param metadata: the JSON part
    :param tensors: the named tensors
    """
    text = json.dumps(metadata, allow_nan=False, indent=1).encode()
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(METADATA, text)
        archive.writestr(TENSORS, tensors_to_bytes(tensors))


def read_bundle(path: Any, where: str) -> tuple[dict[str, Any], Any]:
    """
    Read a weights-only file: JSON and safetensors only (a file of the first format: ``torch.load(weights_only=True)``).

    :param path: a path or a binary buffer
    :param where: the file, for the errors
    :return: the metadata and the nested state dicts by attribute name
    :raises WeightsFileError: for a file that is not a valid weights file (the file is not modified)
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(METADATA)
            if info.file_size > MAX_METADATA_BYTES:
                raise WeightsFileError(f"{where}: {METADATA} is {info.file_size} bytes (at most {MAX_METADATA_BYTES}).")
            metadata = json.loads(archive.read(METADATA))
            if not isinstance(metadata, dict) or metadata.get("format") not in (WEIGHTS_FORMAT, LEGACY_WEIGHTS_FORMAT):
                got = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
                raise WeightsFileError(f"{where}: metadata.json 'format' must be {WEIGHTS_FORMAT!r}, got {got!r}.")
            member = LEGACY_TENSORS if metadata["format"] == LEGACY_WEIGHTS_FORMAT else TENSORS
            if member not in archive.namelist():
                raise WeightsFileError(f"{where}: there is no {member} in the archive. The file was not modified.")
            tensor_bytes = archive.read(member)
    except WeightsFileError:
        raise
    except (KeyError, zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError) as error:
        raise WeightsFileError(f"{where}: {type(error).__name__}: {error}. The file was not modified.") from error
    if member == LEGACY_TENSORS:
        return metadata, _legacy_tensors(tensor_bytes, where)
    state = unflatten_tensors(tensors_from_bytes(tensor_bytes, where), metadata.get("tensors"))
    if not (isinstance(state, dict) and all(isinstance(k, str) for k in state)):
        raise WeightsFileError(f"{where}: metadata.json 'tensors' must describe an object of state dicts by name.")
    return metadata, state


def _legacy_tensors(data: bytes, where: str) -> Any:
    import pickle

    try:  # weights_only=True: torch's restricted unpickler, which builds tensors and plain containers only
        return th.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise WeightsFileError(
            f"{where}: {LEGACY_TENSORS} holds something other than plain tensors, or is corrupt "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); nothing in it was run."
        ) from error
