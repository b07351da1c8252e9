"""
Fast-FedPG on Flower: the agent (ClientApp) and server (ServerApp) logic.

One communication round is two message exchanges:

1. ``train.grad`` — the server sends ``θ̄``; each agent computes its anchor ``a_i = ĝ_i(θ̄)``
   on a fresh batch, keeps it in ``context.state`` and replies with it. The server
   validates the anchors and averages them with :func:`fedmath.average_anchor_gradients`.
2. ``train.local`` — only the agents whose anchor was accepted receive ``θ̄`` and ``g``;
   each runs ``H`` corrected local steps with :func:`fedmath.run_local_steps` (its own
   anchor as a one-row array) and replies with ``Δ_i = θ_{i,H} − θ̄``. The server validates
   the changes and applies :func:`fedmath.aggregate_parameter_changes`.

The correction and averaging are never re-implemented here: the same functions drive the
in-process :class:`~sb3_fedpg.FederatedPG`.

Everything an agent must remember between messages (its anchor, its local critic and
critic optimiser, the moments of ``local_optimizer="adam"``) lives in ``context.state``
as an ``ArrayRecord``: in a deployment each message is handled by a fresh process.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.logger import log

from sb3_fedpg.flower.config import FlowerRunConfig, parse_run_config

#: Message types of the two phases (``@app.train("grad")`` / ``@app.train("local")``).
PHASE_GRAD = "train.grad"
PHASE_LOCAL = "train.local"
#: Keys of the agent's memory in ``context.state``.
STATE_ARRAYS = "fedpg-agent"
STATE_META = "fedpg-agent-meta"


# --------------------------------------------------------------------------- agents
def agent_identity(context: Context) -> tuple[int, int]:
    """
    Which agent this ClientApp is: ``partition-id`` / ``num-partitions`` from the node config
    (set by ``flower-supernode --node-config`` or by the simulation engine).

    :param context: the ClientApp's context
    :return: ``(agent index, number of agents)``
    """
    try:
        agent = int(context.node_config["partition-id"])
        n_agents = int(context.node_config["num-partitions"])
    except KeyError as error:
        raise ValueError(
            'the SuperNode has no agent identity: start it with --node-config "partition-id=<i> num-partitions=<N>"'
        ) from error
    if not 0 <= agent < n_agents:
        raise ValueError(f"partition-id={agent} is outside [0, num-partitions={n_agents})")
    return agent, n_agents


def _message_seed(config: FlowerRunConfig, agent: int, server_round: int, phase: int) -> int:
    # Every (agent, round, phase) gets its own reproducible stream, the same in simulation and
    # deployment (where the process, and thus any RNG state, is new for every message).
    return int(np.random.SeedSequence([config.seed, agent, server_round, phase]).generate_state(1)[0])


class TabularAgent:
    """
    Agent ``i`` of a Garnet MDP with the exact softmax policy gradient of its own reward (deterministic).

    :param config: the run configuration
    :param agent: this agent's index
    :param n_agents: number of agents in the federation (the MDP's rewards depend on it only through
        the agent's own table, see :func:`sb3_fedpg.tabular.garnet`)
    """

    def __init__(self, config: FlowerRunConfig, agent: int, n_agents: int) -> None:
        self.config = config
        self.mdp = make_tabular_mdp(config, n_agents).subset([agent])
        self.n_params = self.mdp.n_params

    def initial_params(self) -> np.ndarray:
        """:return: ``θ̄_0 = 0`` (the uniform policy), float64"""
        return np.zeros(self.n_params)

    def begin(self, state: bytes | None, seed: int) -> None:
        """
        Restore the agent's memory (nothing to restore: the exact oracle is stateless).

        :param state: the stored memory
        :param seed: this message's seed (unused, the oracle is deterministic)
        """

    def dump_state(self) -> bytes:
        """:return: the agent's memory to store (empty)"""
        return b""

    def grad_fn(self, params: np.ndarray, step: int) -> np.ndarray:
        """
        :param params: ``(1, S·A)`` parameters
        :param step: local step index (``-1`` for the anchor)
        :return: the exact gradient ``∇J_i``, ``(1, S·A)``
        """
        from sb3_fedpg.tabular import agent_gradients

        return agent_gradients(self.mdp, params, self.config.tabular_tau).reshape(params.shape)

    def make_update(self, learning_rate: float) -> Callable[[Any, Any, int], Any]:
        """
        :param learning_rate: ``η``
        :return: plain gradient ascent (what the in-process tabular runs use)
        """
        from sb3_fedpg.common import fedmath

        return fedmath.gradient_step(learning_rate)

    def to_numpy(self, vector: Any) -> np.ndarray:
        """
        :param vector: an oracle output
        :return: it as a NumPy array
        """
        return np.asarray(vector)

    def metrics(self) -> dict[str, float]:
        """:return: metrics of the last oracle calls (none)"""
        return {}


def make_tabular_mdp(config: FlowerRunConfig, n_agents: int):
    """
    :param config: the run configuration
    :param n_agents: number of agents
    :return: the federated Garnet MDP of the tabular task
    """
    from sb3_fedpg.tabular import garnet

    return garnet(
        n_states=config.tabular_n_states,
        n_actions=config.tabular_n_actions,
        branching=config.tabular_branching,
        n_agents=n_agents,
        heterogeneity=config.heterogeneity,
        gamma=config.tabular_gamma,
        seed=config.seed,
    )


class _OneAgentReward:
    """A family's batched reward seen by a single agent: every sub-env belongs to agent ``agent``."""

    def __init__(self, reward_fn: Any, agent: int) -> None:
        self.reward_fn = reward_fn
        self.agent = agent

    def __call__(self, obs, action, next_obs, reward, agent_ids):
        return self.reward_fn(obs, action, next_obs, reward, agent_ids + self.agent)


def make_agent_env(config: FlowerRunConfig, agent: int, n_agents: int, seed: int | None = None):
    """
    Agent ``i``'s own environment (its reward only), ``n_envs_per_agent`` sub-environments.

    :param config: the run configuration
    :param agent: the agent's index
    :param n_agents: number of agents in the federation (sets the agent's reward parameters)
    :param seed: seed of the first reset
    :return: a one-agent :class:`~sb3_fedpg.common.federated_vec_env.FederatedVecEnv`
    """
    import gymnasium as gym

    from sb3_fedpg.common.federated_vec_env import make_federated_vec_env
    from sb3_fedpg.envs.families import get_family

    family = get_family(config.env_id)
    if family is not None and family.make_vector_env is None:
        # Shared dynamics: the fast (native) vector env, with the family's reward for agent i only.
        reward_fn, base_id, base_kwargs = family.build(n_agents, **config.env_kwargs())
        return make_federated_vec_env(
            base_id,
            1,
            config.n_envs_per_agent,
            reward_fns=_OneAgentReward(reward_fn, agent),
            env_kwargs=base_kwargs,
            seed=seed,
        )
    if family is not None:
        # Per-agent dynamics (transition heterogeneity): agent i's own single env.
        env_id, kwargs = config.env_id, dict(agent=agent, n_agents=n_agents, **config.env_kwargs())
        return make_federated_vec_env([lambda: gym.make(env_id, **kwargs)], 1, config.n_envs_per_agent, seed=seed)
    # A plain Gymnasium id: identical agents.
    return make_federated_vec_env(config.env_id, 1, config.n_envs_per_agent, seed=seed)


def make_agent_model(config: FlowerRunConfig, agent: int, n_agents: int):
    """
    A one-agent :class:`~sb3_fedpg.FederatedPG` on agent ``i``'s environment.

    :param config: the run configuration
    :param agent: the agent's index
    :param n_agents: number of agents in the federation
    :return: the model (its policy is built from ``config.seed``, identical on every agent and the server)
    """
    from sb3_fedpg import FederatedPG

    env = make_agent_env(config, agent, n_agents, seed=config.seed + agent)
    return FederatedPG("MlpPolicy", env, n_agents=1, seed=config.seed, device="cpu", **config.algorithm_kwargs())


class NeuralAgent:
    """
    One agent of a heterogeneous Gymnasium family, with FederatedPG's own gradient oracle
    (``_collect_batch`` + ``_batch_gradients`` on a one-agent model) and its local critic.

    :param config: the run configuration
    :param agent: this agent's index
    :param n_agents: number of agents in the federation
    """

    def __init__(self, config: FlowerRunConfig, agent: int, n_agents: int) -> None:
        import torch as th
        from stable_baselines3.common.callbacks import CallbackList

        th.set_num_threads(1)  # one thread per agent process is fastest on small machines (NOTES.md)
        self.config = config
        self.model = make_agent_model(config, agent, n_agents)
        self.n_params = self.model.n_federated_params
        self.model._setup_learn(total_timesteps=1, callback=None, reset_num_timesteps=True, progress_bar=False)
        self._callback = CallbackList([])
        self._callback.init_callback(self.model)

    def initial_params(self) -> np.ndarray:
        """:return: the initial global parameters ``θ̄_0`` (float32)"""
        return self.model.get_global_parameters().cpu().numpy()

    def begin(self, state: bytes | None, seed: int) -> None:
        """
        Restore the agent's memory and reseed its RNGs and environments for this message.

        :param state: the stored memory (``None`` at the first message)
        :param seed: this message's seed
        """
        import torch as th

        model = self.model
        if state:
            saved = th.load(io.BytesIO(state), weights_only=True)
            model.critics.load_state_dict(saved["critics"])
            model.critic_optimizer.load_state_dict(saved["critic_optimizer"])
            model.local_optimizer_state.load_state_dict(saved["local_optimizer_state"])
        model.set_random_seed(seed)
        # A fresh reset per message: deployment cannot keep episodes running between processes,
        # so simulation does the same and both see the same batches.
        model._last_obs = model.env.reset()
        model.ep_info_buffer.clear()
        model.num_timesteps = 0
        model._last_stats = {}

    def dump_state(self) -> bytes:
        """:return: the local critic, its optimiser and the local optimiser state, serialised"""
        import torch as th

        buffer = io.BytesIO()
        model = self.model
        th.save(
            {
                "critics": model.critics.state_dict(),
                "critic_optimizer": model.critic_optimizer.state_dict(),
                "local_optimizer_state": model.local_optimizer_state.state_dict(),
            },
            buffer,
        )
        return buffer.getvalue()

    def grad_fn(self, params: Any, step: int) -> Any:
        """
        :param params: ``(1, n_params)`` actor parameters
        :param step: local step index (``-1`` for the anchor)
        :return: the agent's gradient estimate on a fresh batch, ``(1, n_params)``
        """
        import torch as th

        params = th.as_tensor(params, dtype=th.float32)
        return self.model._gradient_oracle(self._callback)(params, step)

    def make_update(self, learning_rate: float) -> Callable[[Any, Any, int], Any]:
        """
        :param learning_rate: ``η``
        :return: the model's local update (plain ascent, or Adam; clipped by ``max_grad_norm``)
        """
        return self.model.local_optimizer_state.make_update(learning_rate, self.model.max_grad_norm)

    def to_numpy(self, vector: Any) -> np.ndarray:
        """
        :param vector: an oracle output (a torch tensor)
        :return: it as a NumPy array
        """
        return vector.detach().cpu().numpy()

    def metrics(self) -> dict[str, float]:
        """:return: metrics of this message's batches (episode returns under the agent's own reward)"""
        out = {key.split("/")[-1]: float(value) for key, value in self.model._last_stats.items()}
        if len(self.model.ep_info_buffer) > 0:
            out["ep_rew_mean"] = float(np.mean([ep["r"] for ep in self.model.ep_info_buffer]))
            out["ep_len_mean"] = float(np.mean([ep["l"] for ep in self.model.ep_info_buffer]))
        out["num_timesteps"] = float(self.model.num_timesteps)
        return out


# In simulation a worker handles many messages of many virtual agents: building the model once per
# agent saves time. It is only a cache: the agent's memory is always restored from context.state.
_AGENT_CACHE: dict[tuple[int, int, str], TabularAgent | NeuralAgent] = {}


def get_agent(config: FlowerRunConfig, context: Context) -> tuple[TabularAgent | NeuralAgent, int, int]:
    """
    :param config: the run configuration
    :param context: the ClientApp's context
    :return: ``(agent, agent index, number of agents)``
    """
    agent, n_agents = agent_identity(context)
    key = (context.run_id, agent, repr(config))
    if key not in _AGENT_CACHE:
        if len(_AGENT_CACHE) > 64:
            _AGENT_CACHE.clear()
        cls = TabularAgent if config.task == "tabular" else NeuralAgent
        _AGENT_CACHE[key] = cls(config, agent, n_agents)
    return _AGENT_CACHE[key], agent, n_agents


def _corrupt(vector: np.ndarray, kind: str) -> np.ndarray:
    # Fault injection for tests: what a buggy agent might send.
    vector = np.array(vector, copy=True)
    if kind == "nan":
        vector[0] = np.nan
    elif kind == "shape":
        vector = np.concatenate([vector, vector[:1]])
    elif kind == "huge":
        vector = vector + 1e12
    return vector


def _reply(msg: Message, key: str, vector: np.ndarray, metrics: dict[str, float]) -> Message:
    content = RecordDict({key: ArrayRecord({key: Array(np.ascontiguousarray(vector))}), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


def _read_vector(msg: Message, key: str) -> np.ndarray:
    return msg.content[key][key].numpy()  # type: ignore[index]


def handle_anchor(msg: Message, context: Context, overrides: Mapping[str, Any] | None = None) -> Message:
    """
    Phase 1 on agent ``i``: ``a_i = ĝ_i(θ̄)`` on a fresh batch, kept in ``context.state`` and sent back.

    :param msg: the server's ``train.grad`` message (``θ̄`` and the round number)
    :param context: the ClientApp's context (run config, node config, state)
    :param overrides: run config entries that take precedence over ``context.run_config``
    :return: the reply with the anchor and metrics
    """
    config = parse_run_config({**context.run_config, **(overrides or {})})
    agent, agent_index, _ = get_agent(config, context)
    server_round = int(msg.content["config"]["round"])  # type: ignore[index]
    theta_bar = _read_vector(msg, "params")
    stored = _load_state(context)
    agent.begin(stored, _message_seed(config, agent_index, server_round, 1))
    anchor = agent.to_numpy(agent.grad_fn(theta_bar[None], -1))[0]
    # Remember the anchor (exact, before any fault injection) for phase 2.
    _save_state(context, agent.dump_state(), anchor, server_round)
    sent = _corrupt(anchor, config.fault_kind) if config.fault_applies(agent_index, "grad", server_round) else anchor
    return _reply(msg, "anchor", sent, {"agent": agent_index, **agent.metrics()})


def handle_local(msg: Message, context: Context, overrides: Mapping[str, Any] | None = None) -> Message:
    """
    Phase 2 on agent ``i``: ``H`` corrected local steps from ``θ̄`` with the stored anchor and the
    server's ``g`` (:func:`fedmath.run_local_steps`), reply ``Δ_i = θ_{i,H} − θ̄``.

    :param msg: the server's ``train.local`` message (``θ̄``, ``g``, round, learning rate)
    :param context: the ClientApp's context
    :param overrides: run config entries that take precedence over ``context.run_config``
    :return: the reply with the parameter change and metrics
    """
    from sb3_fedpg.common import fedmath

    config = parse_run_config({**context.run_config, **(overrides or {})})
    agent, agent_index, _ = get_agent(config, context)
    server_round = int(msg.content["config"]["round"])  # type: ignore[index]
    learning_rate = float(msg.content["config"]["learning-rate"])  # type: ignore[index]
    theta_bar = _read_vector(msg, "params")
    global_grad = _read_vector(msg, "global-grad")
    if STATE_ARRAYS not in context.state.array_records:
        raise RuntimeError(f"agent {agent_index} has no anchor: it missed phase 1 of round {server_round}")
    anchor_round = int(context.state.config_records[STATE_META]["round"])
    if anchor_round != server_round:
        raise RuntimeError(f"agent {agent_index} holds the anchor of round {anchor_round}, not of round {server_round}")
    record = context.state.array_records[STATE_ARRAYS]
    anchor = record["anchor"].numpy()
    agent.begin(_load_state(context), _message_seed(config, agent_index, server_round, 2))
    if isinstance(agent, NeuralAgent):
        import torch as th

        as_array: Callable[[np.ndarray], Any] = lambda x: th.as_tensor(x, dtype=th.float32)
    else:
        as_array = np.asarray
    local = fedmath.run_local_steps(
        as_array(theta_bar),
        as_array(anchor[None]),
        as_array(global_grad),
        agent.grad_fn,
        config.local_steps,
        agent.make_update(learning_rate),
        correction=config.correction,
        reuse_anchor=config.reuse_anchor_batch,
    )
    delta = agent.to_numpy(local)[0] - theta_bar
    _save_state(context, agent.dump_state(), anchor, server_round)
    sent = _corrupt(delta, config.fault_kind) if config.fault_applies(agent_index, "local", server_round) else delta
    return _reply(msg, "delta", sent, {"agent": agent_index, **agent.metrics()})


def _load_state(context: Context) -> bytes | None:
    if STATE_ARRAYS not in context.state.array_records:
        return None
    record = context.state.array_records[STATE_ARRAYS]
    return record["memory"].numpy().tobytes() if "memory" in record else None


def _save_state(context: Context, memory: bytes, anchor: np.ndarray, server_round: int) -> None:
    arrays = {"anchor": Array(np.ascontiguousarray(anchor))}
    if memory:
        arrays["memory"] = Array(np.frombuffer(memory, dtype=np.uint8).copy())
    context.state[STATE_ARRAYS] = ArrayRecord(arrays)
    context.state[STATE_META] = ConfigRecord({"round": server_round})


# --------------------------------------------------------------------------- server
class ServerOutputs:
    """
    What the server writes to ``output_dir``: the global policy as a ``FederatedPG`` zip (neural task)
    or a ``.npy`` (tabular task), a resumable checkpoint after every round, ``rounds.jsonl`` and
    the SB3 logger's files.

    :param config: the run configuration
    :param n_agents: agents in the federation (sets the neural template's environment)
    """

    def __init__(self, config: FlowerRunConfig, n_agents: int) -> None:
        self.config = config
        self.dir = pathlib.Path(config.output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.dir / "checkpoint.npz"
        self.rounds_path = self.dir / "rounds.jsonl"
        self.template = make_agent_model(config, 0, max(n_agents, 1)) if config.task == "neural" else None
        from stable_baselines3.common.logger import configure

        self.logger = configure(str(self.dir), list(config.log_formats))

    @property
    def model_path(self) -> pathlib.Path:
        """Where the global policy is saved."""
        return self.dir / ("model.zip" if self.config.task == "neural" else "params.npy")

    def initial_params(self) -> np.ndarray:
        """:return: ``θ̄_0``: the template model's actor (neural) or zeros (tabular, float64)"""
        if self.template is not None:
            return self.template.get_global_parameters().cpu().numpy()
        return np.zeros(self.config.tabular_n_states * self.config.tabular_n_actions)

    def save(self, params: np.ndarray, history: list[np.ndarray], server_round: int) -> None:
        """
        Save the global policy and the resumable checkpoint (both atomically).

        :param params: ``θ̄`` after ``server_round`` rounds
        :param history: ``θ̄_0 … θ̄_t``
        :param server_round: rounds completed (skipped rounds included)
        """
        if self.template is not None:
            self.template.set_global_parameters(params)
            self.template.save(self.model_path)
        else:
            _atomic_write(self.model_path, lambda f: np.save(f, params))
        fingerprint = json.dumps(_fingerprint(self.config), sort_keys=True)
        _atomic_write(
            self.checkpoint_path,
            lambda f: np.savez(f, params=params, history=np.stack(history), round=server_round, config=fingerprint),
        )

    def load_checkpoint(self) -> tuple[np.ndarray, list[np.ndarray], int] | None:
        """:return: ``(θ̄, history, rounds done)`` from a compatible checkpoint, else ``None``"""
        if not self.checkpoint_path.exists():
            return None
        with np.load(self.checkpoint_path) as data:
            if json.loads(str(data["config"])) != _fingerprint(self.config):
                raise ValueError(
                    f"{self.checkpoint_path} was written by a run with other settings; use another output-dir or resume=false"
                )
            return data["params"], list(data["history"]), int(data["round"])

    def record_round(self, summary: dict[str, Any]) -> None:
        """
        Append the round's summary to ``rounds.jsonl``.

        :param summary: JSON-serialisable round summary
        """
        with open(self.rounds_path, "a") as file:
            file.write(json.dumps(summary) + "\n")


def _fingerprint(config: FlowerRunConfig) -> dict[str, Any]:
    # What must match to resume: the problem and the algorithm, not the run length or the outputs.
    skip = {"num_rounds", "resume", "output_dir", "log_formats", "wait_for_agents_s", "phase_timeout_s", "num_agents"}
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in vars(config).items()
        if k not in skip and not k.startswith("fault")
    }


def _atomic_write(path: pathlib.Path, write: Callable[[Any], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def wait_for_agents(grid: Any, n_wanted: int, timeout: float) -> list[int]:
    """
    Wait until ``n_wanted`` SuperNodes are connected (``get_node_ids()`` is empty right after start).

    :param grid: the ServerApp's grid
    :param n_wanted: number of nodes to wait for
    :param timeout: seconds to wait at most
    :return: the connected node ids (possibly fewer than wanted after the timeout)
    """
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n_wanted or time.monotonic() >= deadline:
            return nodes
        time.sleep(0.2)


def exchange(
    grid: Any,
    node_ids: Iterable[int],
    content: RecordDict,
    message_type: str,
    server_round: int,
    key: str,
    n_params: int,
    config: FlowerRunConfig,
) -> tuple[dict[int, np.ndarray], dict[int, MetricRecord], dict[int, str]]:
    """
    Send one phase's message to the nodes, wait (at most the phase timeout) and validate the replies.

    :param grid: the ServerApp's grid
    :param node_ids: destination nodes
    :param content: the message content (the same for all nodes)
    :param message_type: ``train.grad`` or ``train.local``
    :param server_round: round number (the messages' group id)
    :param key: the reply's vector name (``anchor`` or ``delta``)
    :param n_params: expected vector length
    :param config: the run configuration (timeout, norm limit)
    :return: accepted vectors and metrics by node id, and the reasons of the rejected or missing nodes
    """
    from sb3_fedpg.common.validation import update_problem

    messages = [
        Message(content=content, dst_node_id=node, message_type=message_type, group_id=str(server_round)) for node in node_ids
    ]
    replies = grid.send_and_receive(messages, timeout=config.phase_timeout_s)
    # Match replies by reply_to_message_id: an error reply may name the SuperLink as its source.
    node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
    accepted: dict[int, np.ndarray] = {}
    metrics: dict[int, MetricRecord] = {}
    problems: dict[int, str] = {}
    for reply in replies:
        node = node_of.get(reply.metadata.reply_to_message_id)
        if node is None:
            continue
        if reply.has_error():
            problems[node] = f"error reply (code {reply.error.code}): {reply.error.reason}"
            continue
        try:
            vector = reply.content[key][key].numpy()  # type: ignore[index]
        except (KeyError, TypeError, ValueError) as error:
            problems[node] = f"malformed reply ({type(error).__name__}: {error})"
            continue
        problem = update_problem(vector, n_params, config.max_update_norm)
        if problem is not None:
            problems[node] = f"rejected {key}: {problem}"
            continue
        accepted[node] = vector
        if "metrics" in reply.content.metric_records:
            metrics[node] = reply.content.metric_records["metrics"]
    for node in node_of.values():
        if node not in accepted and node not in problems:
            problems[node] = f"no reply within {config.phase_timeout_s:g} s"
    for node, problem in sorted(problems.items()):
        log(WARNING, "round %d %s: node %d left out: %s", server_round, message_type, node, problem)
    return accepted, metrics, problems


def run_server(grid: Any, context: Context, overrides: Mapping[str, Any] | None = None) -> list[np.ndarray]:
    """
    The ServerApp's main loop: ``num-rounds`` two-phase Fast-FedPG rounds over the connected agents.

    Partial participation: ``g`` averages the anchors accepted in phase 1; only those agents get
    phase 2; ``θ̄`` moves by the mean change of the agents accepted in phase 2. A phase with fewer
    than ``min-agents`` accepted replies skips the round (``θ̄`` unchanged).

    :param grid: the ServerApp's grid
    :param context: the ServerApp's context (``run_config`` holds the kebab-case settings)
    :param overrides: run config entries that take precedence over ``context.run_config``
    :return: the global parameters after every round, ``[θ̄_0, …, θ̄_T]``
    """
    from sb3_fedpg.common import fedmath
    from sb3_fedpg.common.aggregators import make_aggregator

    config = parse_run_config({**context.run_config, **(overrides or {})})
    n_wanted = max(config.num_agents, config.min_agents)
    nodes = wait_for_agents(grid, n_wanted, config.wait_for_agents_s)
    if len(nodes) < config.min_agents:
        raise RuntimeError(f"only {len(nodes)} agent(s) connected within {config.wait_for_agents_s:g} s, need {n_wanted}")
    outputs = ServerOutputs(config, max(config.num_agents, len(nodes)))
    params = outputs.initial_params()
    history = [params]
    start_round = 0
    if config.resume and (saved := outputs.load_checkpoint()) is not None:
        params, history, start_round = saved
        log(INFO, "resuming from %s after round %d", outputs.checkpoint_path, start_round)
    n_params = params.shape[0]
    log(INFO, "Fast-FedPG on Flower: %d agents connected, %d parameters, %d rounds", len(nodes), n_params, config.num_rounds)
    skipped_in_a_row = 0
    aggregator = make_aggregator(config.aggregator)  # the same rules as FederatedPG(aggregator=...)
    for server_round in range(start_round + 1, config.num_rounds + 1):
        t0 = time.perf_counter()
        nodes = sorted(grid.get_node_ids())
        summary: dict[str, Any] = {"round": server_round, "nodes": len(nodes)}
        # Phase 1: anchors at θ̄.
        content = RecordDict(
            {"params": ArrayRecord({"params": Array(params)}), "config": ConfigRecord({"round": server_round})}
        )
        anchors, metrics1, problems1 = exchange(grid, nodes, content, PHASE_GRAD, server_round, "anchor", n_params, config)
        t1 = time.perf_counter()
        summary.update(phase1_agents=len(anchors), phase1_rejected={str(k): v for k, v in problems1.items()})
        phase2: dict[int, np.ndarray] = {}
        problems2: dict[int, str] = {}
        metrics2: dict[int, MetricRecord] = {}
        # Average in agent order (not by random node id) so runs are reproducible to the last bit.
        agent_of = {node: int(m["agent"]) if "agent" in m else node for node, m in metrics1.items()}  # type: ignore[call-overload]
        if len(anchors) >= config.min_agents:
            phase1_nodes = _in_agent_order(anchors, agent_of)
            stacked_anchors = np.stack([anchors[n] for n in phase1_nodes])
            global_grad = fedmath.average_anchor_gradients(stacked_anchors, aggregator)
            # Phase 2: only the agents whose anchor is part of g.
            content = RecordDict(
                {
                    "params": ArrayRecord({"params": Array(params)}),
                    "global-grad": ArrayRecord({"global-grad": Array(np.asarray(global_grad, dtype=params.dtype))}),
                    "config": ConfigRecord({"round": server_round, "learning-rate": config.learning_rate}),
                }
            )
            phase2, metrics2, problems2 = exchange(
                grid, phase1_nodes, content, PHASE_LOCAL, server_round, "delta", n_params, config
            )
        t2 = time.perf_counter()
        summary.update(phase2_agents=len(phase2), phase2_rejected={str(k): v for k, v in problems2.items()})
        if len(anchors) >= config.min_agents and len(phase2) >= config.min_agents:
            phase2_nodes = _in_agent_order(phase2, agent_of)
            local = params + np.stack([phase2[n] for n in phase2_nodes])
            result = fedmath.RoundResult(
                params=fedmath.aggregate_parameter_changes(params, local, config.server_learning_rate, aggregator),
                anchor_grads=stacked_anchors,
                global_grad=global_grad,
                local_params=local,
                params_before=params,
            )
            params = np.asarray(result.params, dtype=params.dtype)
            skipped_in_a_row = 0
            _log_round(outputs, config, server_round, result, len(phase1_nodes), len(phase2_nodes), metrics1, metrics2)
        else:
            skipped_in_a_row += 1
            summary["skipped"] = True
            log(
                WARNING,
                "round %d skipped: %d anchors and %d changes accepted, min-agents is %d (global policy unchanged)",
                server_round,
                len(anchors),
                len(phase2),
                config.min_agents,
            )
        history.append(params)
        summary.update(phase1_s=t1 - t0, phase2_s=t2 - t1, round_s=time.perf_counter() - t0)
        outputs.save(params, history, server_round)
        outputs.record_round(summary)
        if skipped_in_a_row >= config.max_skipped_rounds:
            log(WARNING, "stopping: %d rounds in a row were skipped", skipped_in_a_row)
            break
    outputs.logger.close()
    log(INFO, "done: global policy saved to %s", outputs.model_path)
    return history


def _in_agent_order(nodes: Iterable[int], agent_of: Mapping[int, int]) -> list[int]:
    return sorted(nodes, key=lambda n: (agent_of.get(n, n), n))


def _log_round(
    outputs: ServerOutputs,
    config: FlowerRunConfig,
    server_round: int,
    result: Any,
    n_phase1: int,
    n_phase2: int,
    metrics1: dict[int, MetricRecord],
    metrics2: dict[int, MetricRecord],
) -> None:
    from sb3_fedpg.common import fedmath

    logger = outputs.logger
    bytes_up, bytes_down = fedmath.round_message_bytes(len(result.params_before), n_phase2, config.correction)
    logger.record("fed/round", server_round)
    logger.record("fed/drift", result.drift)
    logger.record("fed/correction_norm", result.correction_norm)
    logger.record("fed/bytes_up", bytes_up)
    logger.record("fed/bytes_down", bytes_down)
    logger.record("fed/agents_phase1", n_phase1)
    logger.record("fed/agents_phase2", n_phase2)
    logger.record("train/learning_rate", config.learning_rate)
    logger.record("train/policy_gradient_norm", float(np.linalg.norm(result.global_grad)))
    returns = []
    for record in list(metrics1.values()) + list(metrics2.values()):
        if "ep_rew_mean" in record:
            returns.append(float(record["ep_rew_mean"]))  # type: ignore[arg-type]
            logger.record(f"fed/agent_{int(record['agent'])}/ep_rew_mean", float(record["ep_rew_mean"]))  # type: ignore[arg-type]
    if returns:
        logger.record("rollout/ep_rew_mean", float(np.mean(returns)))
    steps = sum(float(r.get("num_timesteps", 0.0)) for r in list(metrics1.values()) + list(metrics2.values()))  # type: ignore[arg-type]
    logger.record("time/round_timesteps", steps)
    logger.dump(step=server_round)
