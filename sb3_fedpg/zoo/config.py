"""
rl-zoo style hyperparameter files, parsed safely and validated.

A config file maps env ids (and ``default``) to hyperparameters::

    sb3_fedpg/HeteroCartPole-v0:
      n_timesteps: !!float 2e5
      n_agents: 8
      n_envs: 64                  # all agents' sub-environments together (rl-zoo meaning)
      policy: MlpPolicy
      policy_kwargs: {net_arch: [64, 64], activation_fn: tanh}
      learning_rate: lin_0.1      # SB3 LinearSchedule from 0.1 to 0
      local_steps: 5
      env_kwargs: {heterogeneity: 1.0}

Nothing is ever ``eval``'d: files are read with a ``yaml.SafeLoader`` (that also reads
``1e6`` as a float; ``!!float 1e6`` works as in rl-zoo), ``policy_kwargs`` must be a mapping,
classes (``activation_fn``, ``optimizer_class``) are looked up by name in a fixed table, and
schedules are ``lin_<start>`` strings turned into SB3's picklable ``LinearSchedule``. Every
other key must be an argument of the algorithm's constructor, with a value of the type its
annotation allows: an unknown key or a bad value raises :class:`ZooConfigError` naming it.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch as th
import yaml
from stable_baselines3.common.utils import LinearSchedule

#: Keys the runner consumes itself (never passed to the algorithm's constructor).
RUNNER_KEYS = (
    "n_timesteps",
    "n_agents",
    "n_envs",
    "n_envs_per_agent",
    "policy",
    "policy_kwargs",
    "env_kwargs",
    "normalize",
)

#: Constructor arguments the runner sets (from the command line or the env it builds).
_RUNNER_SET = {"self", "policy", "env", "tensorboard_log", "verbose", "seed", "device", "_init_setup_model", "env_kwargs"}

#: Sub-environments per agent when neither ``n_envs`` nor ``n_envs_per_agent`` is given.
DEFAULT_ENVS_PER_AGENT = 8

_ACTIVATIONS: dict[str, type[th.nn.Module]] = {
    cls.__name__.lower(): cls
    for cls in (th.nn.Tanh, th.nn.ReLU, th.nn.ELU, th.nn.LeakyReLU, th.nn.GELU, th.nn.SiLU, th.nn.Sigmoid, th.nn.Identity)
}
_ACTIVATIONS["leaky_relu"] = th.nn.LeakyReLU


def _optimizers() -> dict[str, type[th.optim.Optimizer]]:
    from sb3_fedpg.common.torch_optimizer import named_optimizers

    return {name.lower(): cls for name, cls in named_optimizers().items()}


#: policy_kwargs entries whose value names a class: key -> table of allowed classes by lower-case name
_CLASS_KWARGS: dict[str, Callable[[], dict[str, Any]]] = {
    "activation_fn": lambda: _ACTIVATIONS,
    "optimizer_class": _optimizers,
}

_SCHEDULE = re.compile(r"^lin_(?P<start>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)$")


class ZooConfigError(ValueError):
    """A config file, entry, key or value that cannot be used (the message names it)."""


#: How many values YAML aliases (``*name``) may add to a document when expanded (see :class:`ZooLoader`).
ALIAS_BUDGET = 10_000


class YAMLRefused(yaml.YAMLError):
    """A YAML document that parses but is refused before it is built (alias bomb, alias cycle, too deep)."""


class ZooLoader(yaml.SafeLoader):
    """
    ``yaml.SafeLoader`` that also reads ``1e6`` / ``3e-4`` as floats (YAML 1.1 needs a dot, hence rl-zoo's
    ``!!float``) and refuses alias bombs.

    Anchors and aliases (``&base`` / ``*base``, ``<<: *base``) are allowed, but before anything is built
    the document's size with every alias expanded is counted on the parsed node graph (each distinct
    node once, so in time proportional to the file): if the aliases add more than :data:`ALIAS_BUDGET`
    values, or an alias refers to a node that contains it (a cycle), the file is refused. A 508-byte
    "billion laughs" file that expands to 10⁹ values is refused in milliseconds instead of exhausting
    memory while an error message is built.
    """

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        check_alias_expansion(node)
        return self.construct_document(node)


def check_alias_expansion(root: yaml.Node, budget: int = ALIAS_BUDGET) -> int:
    """
    :param root: a composed YAML node graph (aliases are shared nodes)
    :param budget: how many values the aliases may add
    :return: the number of values of the document with every alias expanded
    :raise YAMLRefused: the aliases add more than ``budget`` values, or form a cycle
    """
    expanded: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order walk: no recursion limit on deep documents
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            expanded[key] = 1 + sum(expanded[id(child)] for child in _children(node))
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise YAMLRefused("an alias refers to a node that contains it (a cycle); this is not allowed")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in expanded)
        if len(on_path) > 10_000:
            raise YAMLRefused("the document is nested more than 10000 levels deep")
    total = expanded[id(root)]
    if total - len(expanded) > budget:
        raise YAMLRefused(
            f"its aliases expand to {total} values from {len(expanded)} written ones: aliases may add at most "
            f"{budget} values (an alias bomb?)"
        )
    return total


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


ZooLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, where: str = "<string>") -> Any:
    """
    :param text: YAML text
    :param where: what it is, for error messages
    :return: the parsed value (plain Python types only)
    """
    try:
        return yaml.load(text, Loader=ZooLoader)
    except YAMLRefused as error:
        raise ZooConfigError(f"{where}: refused: {error}.") from error
    except yaml.YAMLError as error:
        raise ZooConfigError(f"{where}: not valid YAML (only plain values, no Python tags): {error}") from error
    except RecursionError as error:
        raise ZooConfigError(f"{where}: not valid YAML: nested too deeply.") from error


def load_config_file(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """
    Read a config file: a mapping from env id (or ``default``) to a mapping of hyperparameters.

    :param path: the YAML file
    :return: the file's content
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ZooConfigError(f"config file {path} does not exist.")
    with open(path) as f:
        content = parse_yaml(f.read(), path)
    if not isinstance(content, dict):
        raise ZooConfigError(f"{path}: expected a mapping from env id (or 'default') to hyperparameters.")
    for env_id, entry in content.items():
        if not isinstance(entry, dict):
            raise ZooConfigError(f"{path}: the entry {env_id!r} must be a mapping of hyperparameters, got {entry!r}.")
    return content


def select_entry(content: dict[str, dict[str, Any]], env_id: str, path: str = "<config>") -> dict[str, Any]:
    """
    The hyperparameters of ``env_id``, else the ``default`` entry (rl-zoo semantics: no merging).

    :param content: the config file's content
    :param env_id: the env id
    :param path: the file, for error messages
    :return: a copy of the entry
    """
    if env_id in content:
        return dict(content[env_id])
    if "default" in content:
        return dict(content["default"])
    raise ZooConfigError(f"{path} has no entry for {env_id!r} and no 'default' entry; it has {sorted(content)}.")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """
    Parse ``-params key:value`` overrides; values are YAML (``lr:1e-3``, ``policy_kwargs:"{net_arch: [16]}"``),
    dotted keys set one entry of a mapping (``env_kwargs.heterogeneity:0.5``).

    :param items: the ``key:value`` strings
    :return: the overrides, nested for dotted keys
    """
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition(":")
        key = key.strip()
        if not sep or not key:
            raise ZooConfigError(f"bad override {item!r}: expected key:value (e.g. learning_rate:0.01).")
        value = parse_yaml(text, f"override {key}")
        target = overrides
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ZooConfigError(f"bad override {item!r}: {parent!r} is set to a non-mapping value as well.")
        target[leaf] = value
    return overrides


def apply_overrides(entry: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """
    :param entry: hyperparameters from the file
    :param overrides: output of :func:`parse_overrides` (nested mappings update mappings)
    :return: the merged hyperparameters (a new dict)
    """
    merged = dict(entry)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = apply_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class ZooHyperparams:
    """
    Validated hyperparameters of one run.

    :param n_timesteps: training budget (env steps, all agents together)
    :param n_agents: number of agents ``N`` (``None``: the family's default, or 1 for a plain env)
    :param n_envs_per_agent: sub-environments per agent ``M``
    :param env_kwargs: keyword arguments of the env (family parameters such as ``heterogeneity``)
    :param model_kwargs: keyword arguments of the algorithm's constructor (``policy`` included, schedules
        and classes resolved)
    :param normalize: keyword arguments of the observation normaliser (``FederatedVecNormalize`` for a federated
        algorithm, SB3's ``VecNormalize`` for A2C/PPO); ``None``: no normalisation
    """

    n_timesteps: int
    n_agents: int | None
    n_envs_per_agent: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    normalize: dict[str, Any] | None = None


def normalizer_class(algo_class: type) -> type:
    """
    :param algo_class: the algorithm
    :return: the wrapper ``normalize`` builds: ``FederatedVecNormalize`` for a federated algorithm (per-agent
        statistics merged every round), SB3's ``VecNormalize`` for the centralised references (pooled statistics)
    """
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm
    from sb3_fedpg.common.vec_normalize import FederatedVecNormalize

    return FederatedVecNormalize if issubclass(algo_class, FederatedAlgorithm) else VecNormalize


def _resolve_normalize(value: Any, algo_class: type, where: str) -> dict[str, Any] | None:
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise ZooConfigError(
            f"{where}: 'normalize' must be true, false or a mapping of the normaliser's arguments "
            f"(e.g. {{norm_obs: true, clip_obs: 10.0}}), got {value!r}; strings are never evaluated."
        )
    wrapper = normalizer_class(algo_class)
    accepted = [name for name in inspect.signature(wrapper).parameters if name not in ("self", "venv", "n_agents")]
    for key in value:
        if key not in accepted:
            known = _suggest(str(key), accepted)
            raise ZooConfigError(f"{where}: unknown key 'normalize.{key}' for {wrapper.__name__}{known}")
    kwargs = dict(value) if wrapper.__name__ == "FederatedVecNormalize" else {"norm_reward": False, **value}
    if wrapper.__name__ == "FederatedVecNormalize" and kwargs.get("norm_reward"):
        from sb3_fedpg.common.vec_normalize import NORM_REWARD_REFUSAL

        raise ZooConfigError(f"{where}: bad value for 'normalize.norm_reward': {NORM_REWARD_REFUSAL}")
    return kwargs


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML-made value fits a constructor annotation (conservative: unknown types never match)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if hint in (list, tuple) or origin in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return isinstance(value, LinearSchedule)
    return False


def _hint_text(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def _constructor_hints(algo_class: type[Any]) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    init = algo_class.__init__
    params = dict(inspect.signature(init).parameters)
    hints = {}
    # One annotation at a time: SB3's ``GymEnv`` holds a forward reference that does not resolve
    # in its module, which would make ``get_type_hints`` fail for the whole signature.
    for name, annotation in getattr(init, "__annotations__", {}).items():
        try:
            holder = types.SimpleNamespace(__annotations__={name: annotation})
            hints[name] = typing.get_type_hints(holder, globalns=init.__globals__)[name]
        except Exception:  # an annotation that does not resolve: no type check for that key
            continue
    return params, hints


def _resolve_schedule(key: str, value: Any, hint: Any, where: str) -> Any:
    if isinstance(value, str) and value.startswith("lin_"):
        match = _SCHEDULE.match(value)
        if not _matches(LinearSchedule(1.0, 0.0, 1.0), hint):
            raise ZooConfigError(
                f"{where}: bad value {value!r} for {key!r}: expected {_hint_text(hint)} ({key!r} takes no schedule)."
            )
        if match is None:
            raise ZooConfigError(
                f"{where}: bad value {value!r} for {key!r}: expected a number or lin_<start> (e.g. lin_0.001)."
            )
        return LinearSchedule(start=float(match["start"]), end=0.0, end_fraction=1.0)
    return value


def _resolve_policy_kwargs(policy_kwargs: Any, policy_class: type[Any], where: str) -> dict[str, Any]:
    if policy_kwargs is None:
        return {}
    if not isinstance(policy_kwargs, dict):
        raise ZooConfigError(
            f"{where}: 'policy_kwargs' must be a mapping (e.g. {{net_arch: [64, 64], activation_fn: tanh}}), "
            f"got {policy_kwargs!r}; strings are never evaluated."
        )
    accepted = set(inspect.signature(policy_class.__init__).parameters) - {"self", "observation_space", "action_space"}
    accepted.discard("lr_schedule")
    resolved = {}
    for key, value in policy_kwargs.items():
        if key not in accepted:
            raise ZooConfigError(
                f"{where}: unknown key 'policy_kwargs.{key}' for {policy_class.__name__}{_suggest(key, accepted)}"
            )
        if key in _CLASS_KWARGS:
            value = class_by_name(key, value, where)
        resolved[key] = value
    return resolved


#: Module prefixes a class name in ``policy_kwargs`` may carry (``tanh``, ``nn.Tanh``, ``torch.nn.Tanh``, ...).
_CLASS_PREFIXES = {"", "nn", "th.nn", "torch.nn", "optim", "th.optim", "torch.optim"}


def class_by_name(key: str, value: Any, where: str = "<config>") -> type:
    """
    The class a ``policy_kwargs`` entry names, from a fixed table (nothing is imported or evaluated).

    :param key: ``activation_fn`` or ``optimizer_class``
    :param value: a name (``"tanh"``, ``"ReLU"``, ``"nn.Tanh"``, ``"torch.nn.Tanh"``, ``"adam"``, ``"th.optim.Adam"``)
        or one of the table's classes
    :param where: file and entry, for error messages
    :return: the class
    """
    table = _CLASS_KWARGS[key]()
    if isinstance(value, type) and value in table.values():
        return value
    name = None
    if isinstance(value, str):
        prefix, _, last = value.strip().rpartition(".")
        if prefix in _CLASS_PREFIXES:
            name = last.lower()
    if name not in table:
        raise ZooConfigError(f"{where}: bad value {value!r} for 'policy_kwargs.{key}': use one of {sorted(table)}.")
    return table[name]


def _suggest(key: str, known: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"{hint}; known keys: {', '.join(sorted(known))}."


def validate_hyperparams(entry: dict[str, Any], algo_class: type, where: str = "<config>") -> ZooHyperparams:
    """
    Check every key and value of one entry and turn it into constructor arguments.

    :param entry: the hyperparameters (after overrides)
    :param algo_class: the algorithm class (``FederatedPG``, ``A2C``, ``PPO``...)
    :param where: file and entry, for error messages
    :return: the validated hyperparameters
    """
    params, hints = _constructor_hints(algo_class)
    algo_keys = {name for name, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.KEYWORD_ONLY}
    algo_keys -= _RUNNER_SET | set(RUNNER_KEYS)
    known = set(RUNNER_KEYS) | algo_keys
    for key in entry:
        if not isinstance(key, str) or key not in known:
            raise ZooConfigError(f"{where}: unknown key {key!r} for {algo_class.__name__}{_suggest(str(key), known)}")

    if "n_timesteps" not in entry:
        raise ZooConfigError(f"{where}: 'n_timesteps' is missing (e.g. n_timesteps: !!float 1e5).")
    n_timesteps = entry["n_timesteps"]
    if not isinstance(n_timesteps, int | float) or isinstance(n_timesteps, bool) or not n_timesteps >= 1:
        raise ZooConfigError(f"{where}: bad value {n_timesteps!r} for 'n_timesteps': expected a number >= 1.")
    if isinstance(n_timesteps, float) and not n_timesteps.is_integer():
        raise ZooConfigError(f"{where}: bad value {n_timesteps!r} for 'n_timesteps': expected a whole number.")
    for key in ("n_agents", "n_envs", "n_envs_per_agent"):
        if key in entry and (not _is_int(entry[key]) or entry[key] < 1):
            raise ZooConfigError(f"{where}: bad value {entry[key]!r} for {key!r}: expected a positive integer.")
    n_agents = entry.get("n_agents")
    if "n_envs" in entry and "n_envs_per_agent" in entry:
        raise ZooConfigError(f"{where}: give 'n_envs' (all agents together) or 'n_envs_per_agent', not both.")
    if "n_envs" in entry:
        agents = n_agents or 1
        if entry["n_envs"] % agents != 0:
            raise ZooConfigError(f"{where}: bad value {entry['n_envs']} for 'n_envs': not a multiple of n_agents={agents}.")
        n_envs_per_agent = entry["n_envs"] // agents
    else:
        n_envs_per_agent = entry.get("n_envs_per_agent", DEFAULT_ENVS_PER_AGENT)
    env_kwargs = entry.get("env_kwargs") or {}
    if not isinstance(env_kwargs, dict):
        raise ZooConfigError(f"{where}: 'env_kwargs' must be a mapping, got {env_kwargs!r}.")

    policy = entry.get("policy", "MlpPolicy")
    aliases = getattr(algo_class, "policy_aliases", {})
    if not isinstance(policy, str) or policy not in aliases:
        raise ZooConfigError(f"{where}: bad value {policy!r} for 'policy': {algo_class.__name__} has {sorted(aliases)}.")
    model_kwargs: dict[str, Any] = {"policy": policy}
    policy_kwargs = _resolve_policy_kwargs(entry.get("policy_kwargs"), aliases[policy], where)
    if policy_kwargs:
        model_kwargs["policy_kwargs"] = policy_kwargs

    for key, value in entry.items():
        if key in RUNNER_KEYS:
            continue
        hint = hints.get(key, Any)
        value = _resolve_schedule(key, value, hint, where)
        if not _matches(value, hint):
            raise ZooConfigError(f"{where}: bad value {value!r} for {key!r}: expected {_hint_text(hint)}.")
        model_kwargs[key] = value
    # The algorithm's own validation (the same checks as its constructor and load), before anything is built.
    hyperparams_class = getattr(algo_class, "hyperparams_class", None)
    if hyperparams_class is not None:
        names = set(hyperparams_class.names())
        for key, value in model_kwargs.items():
            if key in names:
                try:
                    hyperparams_class.check(**{key: value})
                except ValueError as error:
                    raise ZooConfigError(f"{where}: bad value {value!r} for {key!r}: {error}") from error
    normalize = _resolve_normalize(entry.get("normalize"), algo_class, where)
    return ZooHyperparams(int(n_timesteps), n_agents, n_envs_per_agent, dict(env_kwargs), model_kwargs, normalize)
