"""
SB3's ``RolloutBuffer`` view of a federated rollout (``model.rollout_buffer``, ``collect_rollouts``).

SB3's on-policy algorithms fill a ``RolloutBuffer`` (a ``DictRolloutBuffer`` for ``Dict`` observations) in
``collect_rollouts`` and their users' callbacks read it in ``_on_rollout_end``. The federated algorithms train on a
:class:`~sb3_fedpg.common.batch.RolloutBatch` (agent-major tensors under per-agent parameters); this module writes one
such batch into an SB3 buffer with SB3's layout: ``buffer_size = n_steps`` rows of ``n_envs = N·M`` columns, the
sub-environments in the federated ``VecEnv``'s order (agent ``i``'s ``M`` envs at columns ``i·M … i·M + M − 1``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer

from sb3_fedpg.common.batch import RolloutBatch

#: Why a buffer class must be SB3's ``RolloutBuffer`` or a subclass of it.
BUFFER_CLASS_REASON = (
    "the federated algorithms fill SB3's RolloutBuffer (DictRolloutBuffer for Dict observations) with every agent's "
    "last rollout through its add(), so rollout_buffer_class must be RolloutBuffer or a subclass of it"
)


def default_buffer_class(observation_space: spaces.Space) -> type[RolloutBuffer]:
    """
    :param observation_space: the model's observation space
    :return: SB3's choice: ``DictRolloutBuffer`` for a ``Dict`` space, else ``RolloutBuffer``
    """
    return DictRolloutBuffer if isinstance(observation_space, spaces.Dict) else RolloutBuffer


def check_buffer_class(buffer_class: Any) -> None:
    """
    :param buffer_class: the ``rollout_buffer_class`` given (``None``: SB3's default)
    :raises TypeError: when it is not ``RolloutBuffer`` or a subclass of it
    """
    if buffer_class is not None and not (isinstance(buffer_class, type) and issubclass(buffer_class, RolloutBuffer)):
        raise TypeError(f"rollout_buffer_class={buffer_class!r} is refused: {BUFFER_CLASS_REASON}.")


def make_rollout_buffer(
    buffer_class: type[RolloutBuffer] | None,
    buffer_kwargs: dict[str, Any] | None,
    n_steps: int,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    device: th.device,
    gamma: float,
    gae_lambda: float,
    n_envs: int,
) -> RolloutBuffer:
    """
    The buffer as SB3's ``OnPolicyAlgorithm._setup_model`` builds it (its errors for wrong keyword arguments, a
    ``DictRolloutBuffer`` on a non-``Dict`` space, ... are SB3's). Its arrays are ``np.zeros``: memory is only
    touched once a rollout is written into them.

    :param buffer_class: the class (``None``: :func:`default_buffer_class`)
    :param buffer_kwargs: extra keyword arguments of the class
    :param n_steps: ``buffer_size``, the steps of one rollout
    :param observation_space: the observation space
    :param action_space: the action space
    :param device: the model's device
    :param gamma: discount factor
    :param gae_lambda: GAE λ
    :param n_envs: all agents' sub-environments, ``N·M``
    :return: the empty buffer
    """
    check_buffer_class(buffer_class)
    cls = buffer_class if buffer_class is not None else default_buffer_class(observation_space)
    return cls(
        n_steps,
        observation_space,
        action_space,
        device=device,
        gamma=gamma,
        gae_lambda=gae_lambda,
        n_envs=n_envs,
        **(buffer_kwargs or {}),
    )


def _steps_first(x: th.Tensor) -> np.ndarray:
    """``(N, K, M)`` → SB3's ``(K, N·M)`` (the federated env's agent-major order), as NumPy."""
    n, k_steps, m = x.shape
    return x.detach().transpose(0, 1).reshape(k_steps, n * m).cpu().numpy()


def fill_rollout_buffer(
    buffer: RolloutBuffer,
    batch: RolloutBatch,
    values: th.Tensor,
    advantages: th.Tensor,
    log_probs: th.Tensor,
) -> None:
    """
    Write a batch into SB3's buffer, replacing what it held. SB3's own two classes are written array by array (what
    their ``add()`` would store, in one copy per array); a subclass gets one ``add()`` per step, so its own ``add``
    runs. Then the algorithm's own advantages and ``returns = advantages + values`` (the buffer's
    ``compute_returns_and_advantage`` is not called: the numbers are those the algorithm trains on).

    :param buffer: the buffer, ``buffer_size = K`` and ``n_envs = N·M``
    :param batch: the batch, with its env observations and first episode starts (``collect_batch`` keeps them)
    :param values: each agent's own critic's values, ``(N, K, M)`` (zeros for an estimator without a critic)
    :param advantages: the estimator's weights before normalisation, ``(N, K, M)``
    :param log_probs: ``log π(a|s)`` of the actions under the parameters that collected them, ``(N, K·M)``
    :raises ValueError: when the buffer's size or number of envs is not the batch's
    """
    n, k_steps, m = batch.n_agents, batch.n_steps, batch.n_envs
    if buffer.buffer_size != k_steps or buffer.n_envs != n * m:
        raise ValueError(
            f"the rollout buffer holds {buffer.buffer_size} steps of {buffer.n_envs} envs, but the rollout is {k_steps} "
            f"steps of {n * m} envs ({n} agents x {m} envs each): build it with buffer_size={k_steps}, n_envs={n * m}."
        )
    assert batch.env_obs is not None and batch.episode_starts is not None, "collect_batch keeps them"
    actions = batch.actions.detach().reshape(n, k_steps, m, -1).transpose(0, 1).reshape(k_steps, n * m, -1).cpu().numpy()
    rewards, dones = _steps_first(batch.rewards), _steps_first(batch.dones)
    # SB3's episode_starts[k]: the episode began at step k (reset, or a done at step k − 1)
    starts = np.concatenate([np.asarray(batch.episode_starts, dtype=np.float32).reshape(1, n * m), dones[:-1]])
    value_rows, log_prob_rows = _steps_first(values), _steps_first(log_probs.reshape(n, k_steps, m))
    buffer.reset()
    if type(buffer) in (RolloutBuffer, DictRolloutBuffer):
        if isinstance(buffer, DictRolloutBuffer):
            for key, array in buffer.observations.items():
                array[:] = np.stack([obs[key] for obs in batch.env_obs]).reshape(array.shape)
        else:
            buffer.observations[:] = np.stack(batch.env_obs).reshape(buffer.observations.shape)
        buffer.actions[:] = actions.reshape(buffer.actions.shape)
        buffer.rewards[:], buffer.episode_starts[:] = rewards, starts
        buffer.values[:], buffer.log_probs[:] = value_rows, log_prob_rows
        buffer.pos, buffer.full = k_steps, True
    else:
        for k in range(k_steps):
            value, log_prob = th.as_tensor(value_rows[k]), th.as_tensor(log_prob_rows[k])
            buffer.add(batch.env_obs[k], actions[k], rewards[k], starts[k], value, log_prob)
    buffer.advantages[:] = _steps_first(advantages)
    buffer.returns[:] = buffer.advantages + buffer.values
