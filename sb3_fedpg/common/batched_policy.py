"""
All agents' copies of an SB3 actor (and their local critics) evaluated at once.

The federated parameters of agent ``i`` are row ``i`` of a stacked tensor of shape
``(n_agents, n_params)``, laid out exactly as ``parameters_to_vector`` lays out the
SB3 policy's actor parameters (features extractor first, then the MLP). The MLP part
views each ``Linear`` weight as a ``(n_agents, out, in)`` slice of that tensor and runs one
``baddbmm`` per layer; a features extractor with parameters (``NatureCNN`` of ``CnnPolicy``,
``CombinedExtractor`` of ``MultiInputPolicy``, a custom one) runs once for all agents through
``torch.func.functional_call`` + ``vmap`` over the stacked rows (convolutions become grouped
convolutions). So a forward/backward for all agents costs one call per layer whatever
``n_agents`` is, and the gradient of ``Σ_i L_i`` with respect to the stacked tensor is every
agent's own gradient in one backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import StateDependentNoiseDistribution, TanhBijector
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from torch import nn

from sb3_fedpg.common.observations import ObservationLayout


@dataclass(frozen=True)
class _Linear:
    weight: slice
    bias: slice
    out_features: int
    in_features: int


class StackedMLP:
    """
    A chain of ``Linear`` layers and element-wise activations read off SB3 modules,
    evaluated on stacked per-agent parameters.

    :param modules: the modules in order (``Linear`` or parameter-free activations)
    :param offset: where this chain's parameters start in the flat vector
    """

    def __init__(self, modules: list[nn.Module], offset: int = 0) -> None:
        self.ops: list[_Linear | nn.Module] = []
        self.parameters: list[nn.Parameter] = []
        pos = offset
        for module in modules:
            if isinstance(module, nn.Linear):
                n_w = module.out_features * module.in_features
                bias = module.bias
                if bias is None:
                    raise NotImplementedError("Linear layers without bias are not supported by the batched policy.")
                self.ops.append(
                    _Linear(slice(pos, pos + n_w), slice(pos + n_w, pos + n_w + module.out_features), *module.weight.shape)
                )
                self.parameters += [cast(nn.Parameter, module.weight), bias]  # typed Tensor, a Parameter
                pos += n_w + module.out_features
            elif any(True for _ in module.buffers()):
                raise NotImplementedError(
                    f"{type(module).__name__} keeps running statistics, which the batched policy supports in the "
                    "features extractor only (every agent's own, averaged at each round), not in the MLP head: move "
                    "the layer into a features extractor (policy_kwargs['features_extractor_class']), or normalise "
                    "observations with VecNormalize instead; dropout is supported anywhere."
                )
            elif any(True for _ in module.parameters()):
                raise NotImplementedError(
                    f"{type(module).__name__} has parameters; the batched policy supports Linear layers and "
                    "parameter-free activations (MlpPolicy)."
                )
            else:
                self.ops.append(module)
        self.end = pos
        self._cached_views: tuple[th.Tensor, int, list] | None = None
        #: :meth:`backward` is exact: every activation is deterministic and element-wise (no Dropout)
        self.hand_backward_ready = all(isinstance(op, (_Linear, *_HAND_BACKWARD)) for op in self.ops)
        # NumPy twins of the activations, for the rollout path (None: that path is unavailable).
        activations = [op for op in self.ops if not isinstance(op, _Linear)]
        numpy_acts = [_NUMPY_ACTIVATIONS.get(type(op)) for op in activations]
        self.numpy_ready = all(fn is not None for fn in numpy_acts)
        # (None entries only where not numpy_ready, which numpy_forward requires)
        self._numpy_acts = cast(
            "dict[int, Callable[[np.ndarray], np.ndarray]]", dict(zip(map(id, activations), numpy_acts, strict=True))
        )

    def numpy_forward(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """
        The same forward pass in NumPy, for tiny per-step batches where torch's per-op
        overhead dominates (the rollout hot path). Requires :attr:`numpy_ready`.

        :param params: stacked parameters ``(n_agents, n_params)``
        :param x: inputs ``(n_agents, batch, in_features)``
        :return: outputs ``(n_agents, batch, out_features)``
        """
        n = params.shape[0]
        for op in self.ops:
            if isinstance(op, _Linear):
                weight = params[:, op.weight].reshape(n, op.out_features, op.in_features)
                x = np.matmul(x, weight.transpose(0, 2, 1)) + params[:, None, op.bias]
            else:
                if op.training and isinstance(op, nn.Dropout):
                    raise RuntimeError("numpy_forward runs rollouts, which use the eval mode (dropout off).")
                x = self._numpy_acts[id(op)](x)
        return x

    def __call__(self, params: th.Tensor, x: th.Tensor) -> th.Tensor:
        """
        :param params: stacked parameters ``(n_agents, n_params)``
        :param x: inputs ``(n_agents, batch, in_features)``
        :return: outputs ``(n_agents, batch, out_features)``
        """
        return self.forward_cached(params, x)[0]

    def forward_cached(self, params: th.Tensor, x: th.Tensor) -> tuple[th.Tensor, list[th.Tensor]]:
        """
        The forward pass, keeping what :meth:`backward` needs.

        :param params: stacked parameters ``(n_agents, n_params)``
        :param x: inputs ``(n_agents, batch, in_features)``
        :return: outputs ``(n_agents, batch, out_features)`` and every op's input
        """
        inputs = []
        for op, views in zip(self.ops, self._views(params), strict=True):
            inputs.append(x)
            if views is not None:
                weight, bias = views
                x = th.baddbmm(bias, x, weight.transpose(1, 2))
            else:
                x = cast(nn.Module, op)(x)  # no views: an activation
        return x, inputs

    def _views(self, params: th.Tensor) -> list[tuple[th.Tensor, th.Tensor] | None]:
        """
        :param params: stacked parameters ``(n_agents, n_params)``
        :return: per op, the ``(n, out, in)`` weight and ``(n, 1, out)`` bias views of ``params`` (``None`` for an
            activation). Without autograd they are kept for the next call with the same tensor: PPO's epochs update
            one tensor in place (views follow), and re-slicing every layer was a tenth of a minibatch step's ops.
        """
        cached = self._cached_views
        if cached is not None and cached[0] is params and cached[1] == params.data_ptr() and not th.is_grad_enabled():
            return cached[2]
        n, width = params.shape
        linears = [op for op in self.ops if isinstance(op, _Linear)]
        # One split into consecutive pieces, not a slice per weight and bias: under autograd every slice's backward
        # zero-fills a gradient as large as all agents' parameters and adds into it (a third of a round at 2,048
        # agents); the split's backward writes each piece once.
        sizes = [s.stop - s.start for op in linears for s in (op.weight, op.bias)]
        start = linears[0].weight.start if linears else 0
        pieces = iter(params.split([start, *sizes, width - start - sum(sizes)], dim=1)[1:])
        views = [
            (next(pieces).view(n, op.out_features, op.in_features), next(pieces).view(n, 1, op.out_features))
            if isinstance(op, _Linear)
            else None
            for op in self.ops
        ]
        self._cached_views = None if th.is_grad_enabled() else (params, params.data_ptr(), views)
        return views

    def backward(
        self, params: th.Tensor, inputs: list[th.Tensor], output: th.Tensor, grad_output: th.Tensor
    ) -> list[th.Tensor]:
        """
        The backward pass written out (no autograd graph): PPO's minibatch step is a few hundred small ops,
        and autograd's bookkeeping (graph nodes, every slice's gradient scattered into a zero tensor) cost
        about as much as the arithmetic (issue #13).

        :param params: the stacked parameters of the forward pass ``(n_agents, n_params)``
        :param inputs: every op's input, from :meth:`forward_cached`
        :param output: the output of the forward pass
        :param grad_output: gradient of the loss with respect to the output ``(n_agents, batch, out_features)``
        :return: the gradient with respect to this chain's parameters, in pieces ``(n_agents, k)`` that
            concatenate (``th.cat(pieces, dim=1)``) to the layout of ``params[:, offset:end]``
        """
        n = params.shape[0]
        views = self._views(params)
        pieces: list[th.Tensor] = []
        grad = grad_output
        for i in reversed(range(len(self.ops))):
            op = self.ops[i]
            if isinstance(op, _Linear):
                x = inputs[i]
                pieces.append(grad.sum(1))
                if op.in_features < op.out_features:  # (xᵀ g)ᵀ: the faster product when the input is narrow
                    pieces.append(th.bmm(x.transpose(1, 2), grad).transpose(1, 2).reshape(n, -1))
                else:
                    pieces.append(th.bmm(grad.transpose(1, 2), x).view(n, -1))
                if i > 0:  # the first layer's input is the observation: no gradient needed
                    grad = th.bmm(grad, cast("tuple[th.Tensor, th.Tensor]", views[i])[0])  # a Linear op's views
            else:
                grad = _activation_backward(op, grad, inputs[i], inputs[i + 1] if i + 1 < len(self.ops) else output)
        return pieces[::-1]


#: Dropout is the identity in eval mode, the only mode the NumPy (rollout) path runs in.
_NUMPY_ACTIVATIONS: dict[type[nn.Module], Callable[[np.ndarray], np.ndarray]] = {
    nn.Tanh: np.tanh,
    nn.ReLU: lambda x: np.maximum(x, 0.0),
    nn.Identity: lambda x: x,
    nn.Dropout: lambda x: x,
}


#: The activations :meth:`StackedMLP.backward` differentiates exactly (deterministic and element-wise; Dropout's
#: random mask is not kept, so a policy with Dropout trains through autograd).
_HAND_BACKWARD = (nn.Tanh, nn.ReLU, nn.Identity, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid)


def _activation_backward(op: nn.Module, grad: th.Tensor, x: th.Tensor, y: th.Tensor) -> th.Tensor:
    """
    :param op: an element-wise activation
    :param grad: gradient with respect to its output ``y``
    :param x: its input
    :param y: its output
    :return: gradient with respect to its input (autograd's own kernels for the common ones)
    """
    if isinstance(op, nn.Tanh):
        return th.ops.aten.tanh_backward(grad, y)
    if isinstance(op, nn.ReLU):
        return th.ops.aten.threshold_backward(grad, y, 0)
    if isinstance(op, nn.Identity):
        return grad
    with th.enable_grad():  # any other activation: a local autograd call
        x = x.detach().requires_grad_(True)
        (grad_x,) = th.autograd.grad(op(x), x, grad)
    return grad_x


def _flatten_modules(*modules: nn.Module) -> list[nn.Module]:
    out: list[nn.Module] = []
    for module in modules:
        out += list(module) if isinstance(module, nn.Sequential) else [module]
    return out


def check_batchable(policy: ActorCriticPolicy) -> None:
    """
    Raise a clear error if the policy is not an actor-critic the batched path handles.

    :param policy: the SB3 policy
    """
    if not isinstance(policy, ActorCriticPolicy):
        raise NotImplementedError(
            f"FederatedPG needs an ActorCriticPolicy (MlpPolicy, CnnPolicy, MultiInputPolicy), got {type(policy).__name__}."
        )
    space = policy.action_space
    if not isinstance(space, ACTION_SPACES):
        names = ", ".join(cls.__name__ for cls in ACTION_SPACES)
        raise NotImplementedError(f"the federated algorithms support {names} action spaces, got {space}.")
    if isinstance(space, spaces.MultiDiscrete) and (space.nvec.ndim != 1 or np.any(space.start != 0)):
        raise NotImplementedError(
            f"MultiDiscrete action spaces must be one-dimensional and start at 0 (as in SB3), got {space}: "
            "flatten nvec and shift the actions in a wrapper."
        )
    if isinstance(space, spaces.MultiBinary) and not isinstance(space.n, int | np.integer):
        raise NotImplementedError(f"multi-dimensional MultiBinary action spaces are not supported (as in SB3), got {space}.")


#: The action spaces the batched actor samples and scores (SB3's on-policy set).
ACTION_SPACES = (spaces.Discrete, spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)

#: Why gSDE is refused on a space other than ``Box`` (SB3's own check, raised for a loaded model as well).
GSDE_BOX_ONLY = "generalized State-Dependent Exploration (gSDE) can only be used with continuous actions."


@dataclass(frozen=True)
class GSDESettings:
    """
    gSDE's settings, read off SB3's ``StateDependentNoiseDistribution`` (https://arxiv.org/abs/2005.05719).

    :param latent_dim: size of the latent features ``z`` the noise is linear in (the input of ``action_net``)
    :param action_dim: size of an action
    :param log_std_shape: the shape of ``log_std``: ``(latent_dim, action_dim)`` (``full_std``) or ``(latent_dim, 1)``
    :param use_expln: ``σ = expln(log_std)`` instead of ``exp(log_std)``
    :param squash: squash the Gaussian action with ``tanh`` (``squash_output=True``)
    :param learn_features: let the variance's gradient reach the features (SB3's actor-critic policies: never)
    :param epsilon: added to the variance (and to the squash correction), as in SB3
    """

    latent_dim: int
    action_dim: int
    log_std_shape: tuple[int, int]
    use_expln: bool
    squash: bool
    learn_features: bool
    epsilon: float

    @classmethod
    def of(cls, policy: ActorCriticPolicy) -> GSDESettings | None:
        """:return: the policy's gSDE settings, ``None`` when it does not use gSDE"""
        dist = policy.action_dist
        if not isinstance(dist, StateDependentNoiseDistribution):
            return None
        assert dist.latent_sde_dim is not None  # set when the policy built its action net
        shape = tuple(policy.log_std.shape)
        return cls(
            dist.latent_sde_dim,
            dist.action_dim,
            (int(shape[0]), int(shape[1])),
            dist.use_expln,
            dist.bijector is not None,
            dist.learn_features,
            dist.epsilon,
        )

    def std(self, log_std: th.Tensor) -> th.Tensor:
        """
        SB3's ``get_std`` for every agent's row.

        :param log_std: the agents' ``log_std`` rows ``(n, latent_dim · k)`` (``k``: ``action_dim`` or 1)
        :return: the standard deviations of the exploration matrix's entries ``(n, latent_dim, action_dim)``
        """
        log_std = log_std.view(log_std.shape[0], *self.log_std_shape)
        if self.use_expln:  # the paper's expln: exp below 0, log1p + 1 above (keeps σ > 0, slows its growth)
            below = th.exp(log_std) * (log_std <= 0)
            safe = log_std * (log_std > 0) + self.epsilon  # no NaN from log1p of the negative part
            std = below + (th.log1p(safe) + 1.0) * (log_std > 0)
        else:
            std = th.exp(log_std)
        return std.expand(-1, self.latent_dim, self.action_dim)  # without full_std one σ per latent row


class GSDEDistribution(th.distributions.Distribution):
    """
    SB3's ``StateDependentNoiseDistribution`` for every agent row: the action is ``μ(s) + z(s)ᵀ E`` with the
    exploration matrix ``E_{kj} ~ N(0, σ_{kj}²)``, so that given the state it is Gaussian,
    ``N(μ(s), z(s)² · σ² + ε)`` per action dimension (``variance_j = Σ_k z_k² σ_kj²``), optionally squashed by ``tanh``.

    :param mean: ``μ(s)`` ``(n, batch, action_dim)``
    :param std: ``σ`` ``(n, latent_dim, action_dim)`` (:meth:`GSDESettings.std`)
    :param latent: ``z(s)`` ``(n, batch, latent_dim)`` (detached unless the settings learn the features, as in SB3)
    :param settings: the gSDE settings
    """

    arg_constraints: dict = {}

    def __init__(self, mean: th.Tensor, std: th.Tensor, latent: th.Tensor, settings: GSDESettings) -> None:
        self.settings = settings
        self.latent = latent if settings.learn_features else latent.detach()
        variance = th.matmul(self.latent.square(), std.square())
        self.gaussian = th.distributions.Normal(mean, th.sqrt(variance + settings.epsilon), validate_args=False)
        super().__init__(mean.shape[:-1], mean.shape[-1:], validate_args=False)

    @property
    def mean(self) -> th.Tensor:
        """:return: the deterministic action (SB3's ``mode``: the Gaussian's mean, squashed when the policy squashes)"""
        mean = self.gaussian.mean
        return th.tanh(mean) if self.settings.squash else mean

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        """
        :param actions: ``(n, batch, action_dim)`` (squashed, in ``[-1, 1]``, when the policy squashes)
        :return: ``log π(a|s)`` ``(n, batch)``, with SB3's tanh correction when squashed
        """
        if not self.settings.squash:
            return self.gaussian.log_prob(actions).sum(-1)
        gaussian_actions = TanhBijector.inverse(actions)
        correction = th.log(1.0 - th.tanh(gaussian_actions) ** 2 + self.settings.epsilon).sum(-1)
        return self.gaussian.log_prob(gaussian_actions).sum(-1) - correction

    def entropy(self) -> th.Tensor:
        """
        :return: the Gaussian's entropy ``(n, batch)``
        :raises NotImplementedError: when squashed (no analytical form: SB3 estimates it by ``−log π`` of the batch's
            actions, which :meth:`BatchedActor.log_prob_entropy` does)
        """
        if self.settings.squash:
            raise NotImplementedError(
                "a squashed gSDE distribution has no analytical entropy; BatchedActor.log_prob_entropy estimates it by "
                "-log_prob of the actions, as SB3's PPO/A2C do."
            )
        return self.gaussian.entropy().sum(-1)


class BufferRows(nn.Module):
    """
    Per-agent rows of a module's buffers (batch norm's ``running_mean``, ``running_var``, ``num_batches_tracked``):
    each buffer stacked as ``(n_rows, *shape)``, one row per agent, registered under its dotted name with ``__`` for
    ``.`` (so a module holding these rows saves and moves them with its ``state_dict`` and ``.to()``).

    :param module: the module whose buffers are copied into every row
    :param n_rows: the number of rows (agents)
    """

    def __init__(self, module: nn.Module, n_rows: int) -> None:
        super().__init__()
        self.names = [name for name, _ in module.named_buffers()]
        for name, buffer in module.named_buffers():
            rows = buffer.detach().unsqueeze(0).repeat(n_rows, *([1] * buffer.dim()))
            self.register_buffer(name.replace(".", "__"), rows)

    @property
    def n_rows(self) -> int:
        """The number of rows (agents)."""
        return int(self._buffers[self.names[0].replace(".", "__")].shape[0])  # type: ignore[union-attr]

    def rows(self) -> dict[str, th.Tensor]:
        """:return: the stacked rows by the module's buffer names (the tensors themselves: updates land in them)"""
        return {name: cast(th.Tensor, self._buffers[name.replace(".", "__")]) for name in self.names}


#: Why batch norm without a momentum is refused.
CUMULATIVE_BN_REFUSAL = (
    "batch norm with momentum=None (a cumulative average of the batch statistics) is not supported in a features "
    "extractor: its update reads the count as a Python number, which the batched (vmap) pass over agents cannot do. "
    "Give the layer a momentum (the default 0.1)."
)


@contextmanager
def _eval_mode(net: StackedNetwork) -> Iterator[None]:
    """
    Put a batched network's modules (its extractor and MLP layers) in eval mode inside the block, restoring each
    module's own mode after it.

    :param net: the batched network (an ``extractor`` and an ``mlp`` of ops)
    """
    modules = [net.extractor.module, *(op for op in net.mlp.ops if isinstance(op, nn.Module))]
    modes = [module.training for module in modules]
    for module in modules:
        module.train(False)
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


class StackedExtractor:
    """
    An SB3 features extractor evaluated on stacked per-agent parameters: ``torch.func.functional_call`` of the
    module under each agent's row, vectorised over agents with ``vmap`` (one batched call, no loop over agents).

    **Buffers** (batch norm's running statistics): every agent reads and moves its own rows of them
    (:attr:`buffer_rows`, a :class:`BufferRows`), passed to ``functional_call`` with its parameters, so that a
    train-mode pass of ``n_rows`` agents updates each agent's row with its own batch (and an eval-mode pass reads
    them). Without rows (outside a round: :meth:`open_rows`) every agent reads the module's own buffers, which a pass
    leaves unchanged. A pass of another number of rows (a multiple: the anchor's half-batches, two rows per agent) or
    a pass inside :meth:`frozen` reads every agent's rows and updates copies, thrown away: the passes that
    re-evaluate a batch already counted must not count it twice.

    :param extractor: the SB3 features extractor (its parameters set the layout; its own values are not used)
    :param layout: the flat layout of the (preprocessed) observations
    :param offset: where the extractor's parameters start in the flat vector
    """

    def __init__(self, extractor: BaseFeaturesExtractor, layout: ObservationLayout, offset: int = 0) -> None:
        if any(isinstance(m, nn.modules.batchnorm._NormBase) and m.momentum is None for m in extractor.modules()):
            raise NotImplementedError(CUMULATIVE_BN_REFUSAL)
        self.module = extractor
        self.layout = layout
        #: FlattenExtractor on flat rows is the identity: skip it (and keep the NumPy rollout path)
        self.identity = isinstance(extractor, FlattenExtractor)
        self.parameters: list[nn.Parameter] = []
        self._views: list[tuple[str, slice, tuple[int, ...]]] = []
        pos = offset
        for name, param in extractor.named_parameters():
            self._views.append((name, slice(pos, pos + param.numel()), tuple(param.shape)))
            self.parameters.append(param)
            pos += param.numel()
        self.end = pos
        #: the extractor keeps buffers (running statistics)
        self.has_buffers = any(True for _ in extractor.buffers())
        #: every agent's rows of the buffers (``None``: all read the module's own, unchanged)
        self.buffer_rows: BufferRows | None = None
        self._frozen = False
        #: the module's output depends on its train/eval mode (dropout, batch norm)
        self.mode_dependent = any(
            isinstance(m, nn.modules.dropout._DropoutNd | nn.modules.batchnorm._NormBase) for m in extractor.modules()
        )

    def open_rows(self, n_rows: int) -> BufferRows:
        """
        Give every agent its own rows of the buffers, copied from the module's (the global) buffers.

        :param n_rows: the number of agents
        :return: the rows (also :attr:`buffer_rows`)
        """
        self.buffer_rows = BufferRows(self.module, n_rows)
        return self.buffer_rows

    def close_rows(self) -> dict[str, th.Tensor] | None:
        """
        :return: the agents' rows by buffer name (``None`` without buffers or rows); the agents read the module's
            buffers again
        """
        rows, self.buffer_rows = self.buffer_rows, None
        return None if rows is None or not rows.names else rows.rows()

    def set_buffers(self, buffers: dict[str, th.Tensor]) -> None:
        """
        Write buffers into the module (the global buffers: what ``predict`` and ``save`` see).

        :param buffers: the values by buffer name
        """
        with th.no_grad():
            for name, value in buffers.items():
                self.module.get_buffer(name).copy_(value)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Inside the block, passes read the agents' buffers and do not update them."""
        frozen, self._frozen = self._frozen, True
        try:
            yield
        finally:
            self._frozen = frozen

    def _buffers_for(self, n: int) -> dict[str, th.Tensor]:
        """
        :param n: the rows of this pass
        :return: the buffers the pass reads, ``(n, *shape)``: the agents' rows themselves when they are ``n`` and
            not frozen, else copies
        """
        rows = self.buffer_rows
        if rows is None:
            return {name: b.detach().unsqueeze(0).repeat(n, *([1] * b.dim())) for name, b in self.module.named_buffers()}
        stacked = rows.rows()
        if rows.n_rows == n and not self._frozen:
            return stacked
        if n % rows.n_rows != 0:
            raise ValueError(f"a pass of {n} rows cannot read the buffers of {rows.n_rows} agents")
        return {name: b.repeat_interleave(n // rows.n_rows, dim=0) for name, b in stacked.items()}

    def _forward_one(self, params: dict[str, th.Tensor], obs: th.Tensor | dict[str, th.Tensor]) -> th.Tensor:
        return th.func.functional_call(self.module, params, (obs,))

    def __call__(self, params: th.Tensor, obs: th.Tensor) -> th.Tensor:
        """
        :param params: stacked parameters ``(n_agents, n_params)``
        :param obs: flat preprocessed observations ``(n_agents, batch, obs_dim)``
        :return: features ``(n_agents, batch, features_dim)``
        """
        if self.identity:
            return obs
        n = params.shape[0]
        views = {name: params[:, where].view(n, *shape) for name, where, shape in self._views}
        if self.has_buffers:
            views.update(self._buffers_for(n))
        # randomness="different": a dropout layer draws its own mask for every agent
        return th.func.vmap(self._forward_one, randomness="different")(views, self.layout.unflatten(obs))


class StackedNetwork:
    """
    A features extractor followed by an MLP head (:class:`StackedMLP`), on stacked per-agent parameters.

    :param extractor: the SB3 features extractor
    :param layout: the flat layout of the (preprocessed) observations
    :param modules: the MLP head's modules in order
    """

    def __init__(self, extractor: BaseFeaturesExtractor, layout: ObservationLayout, modules: list[nn.Module]) -> None:
        self.extractor = StackedExtractor(extractor, layout)
        self.mlp = StackedMLP(modules, offset=self.extractor.end)
        self.parameters = self.extractor.parameters + self.mlp.parameters
        self.end = self.mlp.end
        #: the NumPy rollout path exists for flat observations into an MLP with NumPy activations
        self.numpy_ready = self.extractor.identity and self.mlp.numpy_ready

    def __call__(self, params: th.Tensor, obs: th.Tensor) -> th.Tensor:
        """
        :param params: stacked parameters ``(n_agents, n_params)``
        :param obs: flat preprocessed observations ``(n_agents, batch, obs_dim)``
        :return: outputs ``(n_agents, batch, out_features)``
        """
        return self.mlp(params, self.extractor(params, obs))

    def numpy_forward(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """
        :meth:`StackedMLP.numpy_forward` (requires :attr:`numpy_ready`: the extractor is the identity).

        :param params: stacked parameters ``(n_agents, n_params)``
        :param x: flat observations ``(n_agents, batch, obs_dim)``
        :return: outputs ``(n_agents, batch, out_features)``
        """
        return self.mlp.numpy_forward(params, x)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class ActorCache:
    """
    What :meth:`BatchedActor.backward` needs from :meth:`BatchedActor.evaluate`.

    :param inputs: every op's input in the actor's MLP
    :param output: the MLP's output (logits or means)
    :param index: the discrete actions, ``(n, batch, 1)``
    :param log_probs: normalised logits
    :param probs: their softmax
    :param entropy: the categorical entropies
    :param z: the standardised Gaussian actions ``(a − mean) / σ``
    :param log_std: ``log σ``, ``(n, 1, action_dim)``
    """

    inputs: list[th.Tensor]
    output: th.Tensor
    index: th.Tensor | None = None
    log_probs: th.Tensor | None = None
    probs: th.Tensor | None = None
    entropy: th.Tensor | None = None
    z: th.Tensor | None = None
    log_std: th.Tensor | None = None


class BatchedActor:
    """
    The policy's actor (``pi_features_extractor`` → ``mlp_extractor.policy_net`` → ``action_net``
    [+ ``log_std``]) for all agents.

    The action distributions are SB3's, batched over agents: ``Discrete`` a categorical on the logits,
    ``Box`` a diagonal Gaussian with state-independent ``log_std`` or, with gSDE (``use_sde=True``), SB3's
    state-dependent noise (:class:`GSDEDistribution`: ``log_std`` is then a ``(latent_dim, action_dim)`` matrix, part
    of every agent's row like the other actor parameters, and each sub-environment's exploration matrix is held by
    :meth:`reset_noise`), ``MultiDiscrete`` one categorical per dimension (their log-probabilities and entropies
    summed), ``MultiBinary`` independent Bernoullis on the logits.

    :param policy: the SB3 policy whose actor layout and distribution are used
    """

    def __init__(self, policy: ActorCriticPolicy) -> None:
        check_batchable(policy)
        #: the observations' flat preprocessed layout (the same preprocessing as ``policy.predict``)
        self.layout = ObservationLayout(policy.observation_space, policy.normalize_images)
        self.net = StackedNetwork(
            policy.pi_features_extractor, self.layout, _flatten_modules(policy.mlp_extractor.policy_net, policy.action_net)
        )
        self.parameters = list(self.net.parameters)
        space = policy.action_space
        # the supported space it derives from: a subclass of Box (SB3's test_predict.py) is a Box
        self.kind = next(cls.__name__ for cls in ACTION_SPACES if isinstance(space, cls))
        self.continuous = isinstance(space, spaces.Box)
        #: gSDE's settings (``None``: the policy does not use gSDE)
        self.gsde = GSDESettings.of(policy)
        #: gSDE: every sub-environment's exploration matrix ``(n_agents, n_envs, latent_dim, action_dim)``, drawn by
        #: :meth:`reset_noise` (``None`` until then)
        self.exploration: th.Tensor | None = None
        self.log_std: slice | None = None
        n_params = self.net.end
        if self.continuous:
            n_act = policy.log_std.numel()
            self.log_std = slice(n_params, n_params + n_act)
            self.parameters.append(policy.log_std)
            n_params += n_act
        self.n_params = n_params
        self._pad_index: th.Tensor | None = None
        if isinstance(space, spaces.MultiDiscrete):
            # The concatenated logits, gathered into a (dims, max_n) grid; short dimensions are padded with a
            # column of -inf (index sum(nvec)) so that one categorical covers every dimension at once.
            nvec = [int(k) for k in space.nvec]
            starts = np.cumsum([0, *nvec[:-1]])
            grid = np.full((len(nvec), max(nvec)), sum(nvec))
            for d, (start, k) in enumerate(zip(starts, nvec, strict=True)):
                grid[d, :k] = start + np.arange(k)
            self._pad_index = th.as_tensor(grid)
        #: :meth:`evaluate`/:meth:`backward` apply: flat observations (identity extractor), an MLP the
        #: hand-written backward covers, Discrete or Box actions without gSDE; otherwise the solver differentiates with
        #: autograd
        self.hand_backward_ready = (
            self.gsde is None
            and self.net.extractor.identity
            and self.net.mlp.hand_backward_ready
            and self.kind
            in (
                "Discrete",
                "Box",
            )
        )

    @property
    def has_buffers(self) -> bool:
        """The features extractor keeps buffers (batch norm's running statistics)."""
        return self.net.extractor.has_buffers

    def open_local_buffers(self, n_agents: int) -> None:
        """
        The start of a round: every agent gets its own rows of the extractor's buffers, copied from the global ones
        (the SB3 policy's), which its train-mode passes move and its eval-mode passes read (no-op without buffers).

        :param n_agents: the number of agents
        """
        if self.has_buffers:
            self.net.extractor.open_rows(n_agents)

    def local_buffers(self) -> dict[str, th.Tensor] | None:
        """
        :return: every agent's rows of the buffers ``(n_agents, *shape)`` by name, for the server to average
            (:func:`~sb3_fedpg.common.fedmath.average_buffers`); ``None`` outside a round or without buffers
        """
        rows = self.net.extractor.buffer_rows
        return None if rows is None else rows.rows()

    def close_local_buffers(self) -> None:
        """The end of a round: the agents' rows are dropped and every pass reads the global buffers again."""
        self.net.extractor.close_rows()

    def set_buffers(self, buffers: dict[str, th.Tensor]) -> None:
        """
        Write the global buffers into the SB3 policy's extractor (what ``predict`` and ``save`` use).

        :param buffers: the values by name
        """
        self.net.extractor.set_buffers(buffers)

    def frozen_buffers(self) -> AbstractContextManager[None]:
        """
        :return: a block whose passes read the agents' buffers without moving them: a pass that re-evaluates a batch
            already counted (another part of the same gradient, the same batch at other parameters)
        """
        return self.net.extractor.frozen()

    @property
    def numpy_ready(self) -> bool:
        """Whether :meth:`sample_numpy` can run the rollout (an MLP on flat observations, without gSDE)."""
        return self.net.numpy_ready and self.gsde is None

    @contextmanager
    def evaluation(self) -> Iterator[None]:
        """
        Run the actor in eval mode inside the block (dropout off, batch norm on its running statistics), as SB3 does
        for rollouts and ``predict``; the updates run in train mode (dropout on, batch statistics), as in SB3's
        ``train``.
        """
        with _eval_mode(self.net):
            yield

    def _padded_logits(self, out: th.Tensor) -> th.Tensor:
        # (..., sum(nvec)) -> (..., dims, max_n)
        assert self._pad_index is not None
        pad = out.new_full((*out.shape[:-1], 1), -th.inf)
        return th.cat([out, pad], dim=-1)[..., self._pad_index.to(out.device)]

    def distribution(self, params: th.Tensor, obs: th.Tensor) -> th.distributions.Distribution:
        """
        :param params: stacked actor parameters ``(n_agents, n_params)``
        :param obs: flat preprocessed observations ``(n_agents, batch, obs_dim)``
        :return: the action distribution, batch shape ``(n_agents, batch)``
        """
        if self.gsde is not None:
            mean, latent = self._mean_and_latent(params, obs)
            return GSDEDistribution(mean, self.gsde.std(params[:, self.log_std]), latent, self.gsde)
        out = self.net(params, obs)
        # No argument validation: it re-checks every tensor on every call (a visible share of a small batch's
        # time); the actions come from our own sampler and the parameters are checked for finiteness each round.
        dist: th.distributions.Distribution
        if self.kind == "Discrete":
            return th.distributions.Categorical(logits=out, validate_args=False)
        if self.kind == "Box":
            std = params[:, self.log_std].exp().unsqueeze(1).expand_as(out)
            dist = th.distributions.Normal(out, std, validate_args=False)
        elif self.kind == "MultiDiscrete":
            dist = th.distributions.Categorical(logits=self._padded_logits(out), validate_args=False)
        else:
            dist = th.distributions.Bernoulli(logits=out, validate_args=False)
        return th.distributions.Independent(dist, 1, validate_args=False)

    def _mean_and_latent(self, params: th.Tensor, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        :return: the MLP's output (gSDE: the Gaussian's mean) and the input of its last layer (``action_net``'s input,
            the latent features ``z(s)`` gSDE's noise is linear in), both ``(n_agents, batch, ·)``
        """
        out, inputs = self.net.mlp.forward_cached(params, self.net.extractor(params, obs))
        return out, inputs[-1]

    def log_prob_entropy(self, params: th.Tensor, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        The log-probabilities of ``actions`` and the entropies of :meth:`distribution` (differentiable): the entropy
        of a squashed gSDE distribution, which has no analytical form, is SB3's estimate ``−log π(a|s)``.

        :param params: stacked actor parameters ``(n_agents, n_params)``
        :param obs: flat observations ``(n_agents, batch, obs_dim)``
        :param actions: actions ``(n_agents, batch[, action_dim])``
        :return: ``log π(a|s)`` and the entropy (or its estimate), both ``(n_agents, batch)``
        """
        dist = self.distribution(params, obs)
        log_prob = dist.log_prob(actions)
        if self.gsde is not None and self.gsde.squash:
            return log_prob, -log_prob
        return log_prob, dist.entropy()

    def evaluate(self, params: th.Tensor, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, ActorCache]:
        """
        Log-probabilities and entropies of :meth:`distribution`, computed directly and keeping what
        :meth:`backward` needs (the minibatch hot path: no distribution object, no autograd graph).

        :param params: stacked actor parameters ``(n_agents, n_params)``
        :param obs: flat observations ``(n_agents, batch, obs_dim)``
        :param actions: actions ``(n_agents, batch[, action_dim])``
        :return: ``log π(a|s)`` and the entropy, both ``(n_agents, batch)``, and the cache
        """
        if not self.hand_backward_ready:
            raise NotImplementedError(
                "the hand-written backward covers flat observations, MLPs without Dropout and Discrete/Box actions "
                "(without gSDE); use distribution() and autograd for this policy."
            )
        out, inputs = self.net.mlp.forward_cached(params, obs)
        cache = ActorCache(inputs, out)
        if self.log_std is None:  # Categorical(logits=out)
            cache.log_probs = th.log_softmax(out, dim=-1)  # the normalised logits
            cache.probs = cache.log_probs.exp()
            cache.index = actions.long().unsqueeze(-1)
            log_prob = cache.log_probs.gather(-1, cache.index).squeeze(-1)
            cache.entropy = -(cache.log_probs * cache.probs).sum(-1)
            return log_prob, cache.entropy, cache
        # Independent(Normal(out, exp(log_std)), 1): the log_std row is state-independent
        cache.log_std = params[:, self.log_std].unsqueeze(1)
        cache.z = (actions - out) / cache.log_std.exp()
        log_prob = (-0.5 * cache.z.square() - cache.log_std - _HALF_LOG_2PI).sum(-1)
        entropy = (0.5 + _HALF_LOG_2PI + cache.log_std).sum(-1).expand(-1, out.shape[1])
        return log_prob, entropy, cache

    def backward(
        self,
        params: th.Tensor,
        cache: ActorCache,
        grad_log_prob: th.Tensor,
        grad_entropy: float,
        out: th.Tensor | None = None,
    ) -> th.Tensor:
        """
        The gradient with respect to the stacked parameters of a loss, given its gradients with respect to
        :meth:`evaluate`'s outputs.

        :param params: the stacked parameters given to :meth:`evaluate`
        :param cache: its cache
        :param grad_log_prob: ``∂L/∂ log π(a|s)``, ``(n_agents, batch)``
        :param grad_entropy: ``∂L/∂ entropy``, the same for every sample
        :param out: where to write the gradient (``None``: a new tensor)
        :return: ``∂L/∂params``, ``(n_agents, n_params)``
        """
        g = grad_log_prob.unsqueeze(-1)
        if self.log_std is None:
            assert cache.log_probs is not None and cache.probs is not None and cache.index is not None
            assert cache.entropy is not None
            # ∂ log p_a/∂logits = onehot(a) − p;  ∂H/∂logits = −p (log p + H)
            direction = g if grad_entropy == 0 else g + grad_entropy * (cache.log_probs + cache.entropy.unsqueeze(-1))
            grad_out = (-cache.probs * direction).scatter_add_(-1, cache.index, g)
            return th.cat(self.net.mlp.backward(params, cache.inputs, cache.output, grad_out), dim=1, out=out)
        assert cache.z is not None and cache.log_std is not None
        # ∂ log π/∂mean = z/σ;  ∂ log π/∂ log σ = z² − 1;  ∂H/∂ log σ = 1
        g_z = g * cache.z
        grad_log_std = (g_z * cache.z - g).sum(1) + grad_entropy * cache.z.shape[1]
        pieces = self.net.mlp.backward(params, cache.inputs, cache.output, g_z / cache.log_std.exp())
        return th.cat([*pieces, grad_log_std], dim=1, out=out)

    @th.no_grad()
    def reset_noise(self, params: th.Tensor, n_envs: int, rng: np.random.Generator | None = None) -> None:
        """
        gSDE: draw every sub-environment's exploration matrix ``E ~ N(0, σ_i²)`` from its agent's own ``log_std`` row
        (SB3's ``reset_noise(n_envs)``, one matrix per sub-environment, for every agent). :meth:`sample` then adds
        ``z(s)ᵀ E`` to the mean until the next call.

        :param params: stacked actor parameters ``(n_agents, n_params)`` (each agent's ``σ`` is read off its row)
        :param n_envs: sub-environments per agent
        :param rng: draw from this NumPy generator (the CPU rollout's), else from torch's global generator
        """
        assert self.gsde is not None, "reset_noise() is only available with gSDE (use_sde=True)"
        std = self.gsde.std(params[:, self.log_std]).unsqueeze(1)  # (n, 1, latent_dim, action_dim)
        shape = (params.shape[0], n_envs, self.gsde.latent_dim, self.gsde.action_dim)
        if rng is None:
            noise = th.randn(shape, dtype=params.dtype, device=params.device)
        else:
            noise = th.as_tensor(rng.standard_normal(shape, dtype=np.float32), device=params.device).to(params.dtype)
        self.exploration = std * noise

    def _gsde_sample(self, params: th.Tensor, obs: th.Tensor) -> th.Tensor:
        """gSDE's :meth:`sample`: ``μ(s) + z(s)ᵀ E`` with each sub-environment's exploration matrix (``tanh``'d)."""
        assert self.gsde is not None
        mean, latent = self._mean_and_latent(params, obs)
        if self.exploration is None or self.exploration.shape[:2] != latent.shape[:2]:
            held = None if self.exploration is None else tuple(self.exploration.shape[:2])
            raise RuntimeError(
                f"gSDE: no exploration matrix for each of the {tuple(latent.shape[:2])} (agents, sub-environments) "
                f"(held: {held}); call reset_noise(params, n_envs) before sampling."
            )
        latent = latent if self.gsde.learn_features else latent.detach()
        actions = mean + th.matmul(latent.unsqueeze(-2), self.exploration).squeeze(-2)
        return th.tanh(actions) if self.gsde.squash else actions

    @th.no_grad()
    def sample(self, params: th.Tensor, obs: th.Tensor, rng: np.random.Generator | None = None) -> th.Tensor:
        """
        Sample actions without building a distribution object (the rollout hot path).

        Discrete and MultiDiscrete: Gumbel-max on the logits (per dimension); Box: ``mean + std · ε``;
        MultiBinary: ``u < sigmoid(logits)`` (as floats, like SB3's Bernoulli). Same laws as
        :meth:`distribution`, drawn from torch's global generator (seeded by ``set_random_seed``), or from ``rng``.

        :param params: stacked actor parameters ``(n_agents, n_params)``
        :param obs: flat observations ``(n_agents, batch, obs_dim)``
        :param rng: draw the noise from this NumPy generator, exactly as :meth:`sample_numpy` draws it: the same
            seed then gives the same actions whichever path the observations take (a ``Dict`` observation takes this
            one, its flattened ``Box`` the NumPy one: SB3's ``test_dict_env.py::test_consistency``)
        :return: actions ``(n_agents, batch[, action_dim])``; with gSDE ``batch`` is the agent's sub-environments
            (one exploration matrix each, :meth:`reset_noise`; no draw here)
        """
        if self.gsde is not None:
            return self._gsde_sample(params, obs)
        out = self.net(params, obs)
        if rng is not None:
            return self._sample_with(out, params, rng)
        if self.kind == "Box":
            return out + params[:, self.log_std].exp().unsqueeze(1) * th.randn_like(out)
        if self.kind == "MultiBinary":
            return (th.rand_like(out) < th.sigmoid(out)).to(out.dtype)
        if self.kind == "MultiDiscrete":
            out = self._padded_logits(out)
        gumbel = -th.empty_like(out).exponential_().log()
        return (out + gumbel).argmax(dim=-1)

    def _sample_with(self, out: th.Tensor, params: th.Tensor, rng: np.random.Generator) -> th.Tensor:
        """:meth:`sample` from the network's output ``out`` with :meth:`sample_numpy`'s draws from ``rng``."""

        def draw(array: np.ndarray) -> th.Tensor:
            return th.as_tensor(array, device=out.device)

        if self.kind == "Box":
            noise = draw(rng.standard_normal(tuple(out.shape), dtype=np.float32))
            return out + params[:, self.log_std].exp().unsqueeze(1) * noise
        if self.kind == "MultiBinary":
            return (draw(rng.random(tuple(out.shape), dtype=np.float32)) * (1.0 + th.exp(-out)) < 1.0).to(out.dtype)
        if self.kind == "MultiDiscrete":
            out = self._padded_logits(out)
        return (out.double() - draw(rng.exponential(size=tuple(out.shape))).log()).argmax(dim=-1)

    def sample_numpy(self, params: np.ndarray, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """
        :meth:`sample` in NumPy (the CPU rollout path, see :meth:`StackedMLP.numpy_forward`).

        :param params: stacked actor parameters ``(n_agents, n_params)``, float32
        :param obs: flat observations ``(n_agents, batch, obs_dim)``, float32
        :param rng: the generator to draw from
        :return: actions ``(n_agents, batch[, action_dim])``
        """
        if self.gsde is not None:
            raise NotImplementedError("gSDE samples with sample() (the NumPy path is for the other distributions).")
        out = self.net.numpy_forward(params, obs)
        if self.kind == "Box":
            return out + np.exp(params[:, None, self.log_std]) * rng.standard_normal(out.shape, dtype=np.float32)
        if self.kind == "MultiBinary":
            return (rng.random(out.shape, dtype=np.float32) * (1.0 + np.exp(-out)) < 1.0).astype(np.float32)
        if self.kind == "MultiDiscrete":
            assert self._pad_index is not None
            out = np.concatenate([out, np.full((*out.shape[:-1], 1), -np.inf, out.dtype)], axis=-1)[
                ..., self._pad_index.numpy()
            ]
        return (out - np.log(rng.exponential(size=out.shape))).argmax(axis=-1)

    def get_vector(self) -> th.Tensor:
        """:return: the SB3 policy's current actor parameters as one flat vector"""
        return nn.utils.parameters_to_vector(self.parameters).detach().clone()

    def set_vector(self, vector: th.Tensor) -> None:
        """
        Write a flat actor parameter vector into the SB3 policy (what ``predict`` uses).

        :param vector: flat parameters ``(n_params,)``
        """
        # vector_to_parameters makes the parameters views of its argument: give it a copy, so that the caller's
        # vector and the policy never alias (a later in-place change of either would silently change the other)
        with th.no_grad():
            nn.utils.vector_to_parameters(vector.detach().clone(), self.parameters)


class StackedCritics(nn.Module):
    """
    One local critic per agent (never averaged: each agent's values depend on its own reward).

    Each agent's row holds its whole critic: the value head and its copy of the features extractor. With
    ``share_features_extractor=True`` SB3's actor and critic share one extractor; here the actor's is federated
    (averaged) and every critic starts from a copy of the same weights that it then trains locally. The buffers of
    the extractor (batch norm's running statistics) are local too: every agent's rows (:attr:`buffer_rows`), moved by
    its critic's train-mode passes, saved and rolled back with the critic, never averaged.

    :param policy: the SB3 policy whose critic layout and initial weights are copied to every agent
    :param n_agents: number of agents
    """

    def __init__(self, policy: ActorCriticPolicy, n_agents: int) -> None:
        super().__init__()
        layout = ObservationLayout(policy.observation_space, policy.normalize_images)
        self._net = StackedNetwork(
            policy.vf_features_extractor, layout, _flatten_modules(policy.mlp_extractor.value_net, policy.value_net)
        )
        init = nn.utils.parameters_to_vector(self._net.parameters).detach()
        self.params = nn.Parameter(init.unsqueeze(0).repeat(n_agents, 1))
        #: every agent's own rows of the extractor's buffers (``None``: it has none)
        self.buffer_rows = self._net.extractor.open_rows(n_agents) if self._net.extractor.has_buffers else None
        #: :meth:`forward_cached`/:meth:`backward` apply (flat observations, an MLP without Dropout)
        self.hand_backward_ready = self._net.extractor.identity and self._net.mlp.hand_backward_ready
        #: the values depend on the train/eval mode (dropout or batch norm in the critic): the values an advantage is
        #: computed from come from an eval-mode pass (SB3 computes them during the rollout), the loss's from a
        #: train-mode pass
        self.mode_dependent = self._net.extractor.mode_dependent or any(
            isinstance(op, nn.modules.dropout._DropoutNd) for op in self._net.mlp.ops
        )

    @contextmanager
    def evaluation(self) -> Iterator[None]:
        """Run the critics in eval mode inside the block (dropout off, batch norm on each agent's running statistics)."""
        with _eval_mode(self._net):
            yield

    def values(self, obs: th.Tensor, params: th.Tensor) -> th.Tensor:
        """
        :param obs: flat preprocessed observations ``(n_agents, batch, obs_dim)``
        :param params: the critics' stacked parameters ``(n_agents, n_params)``
        :return: values ``(n_agents, batch)`` (differentiable in ``params``)
        """
        return self._net(params, obs).squeeze(-1)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """
        :param obs: flat preprocessed observations ``(n_agents, batch, obs_dim)``
        :return: values ``(n_agents, batch)``
        """
        return self.values(obs, self.params)

    def forward_cached(
        self, obs: th.Tensor, params: th.Tensor | None = None
    ) -> tuple[th.Tensor, tuple[th.Tensor, list[th.Tensor], th.Tensor]]:
        """
        :param obs: flat observations ``(n_agents, batch, obs_dim)``
        :param params: the critics' stacked parameters (``None``: :attr:`params`)
        :return: values ``(n_agents, batch)`` and what :meth:`backward` needs
        """
        params = self.params if params is None else params
        out, inputs = self._net.mlp.forward_cached(params, obs)
        return out.squeeze(-1), (params, inputs, out)

    def backward(
        self, cache: tuple[th.Tensor, list[th.Tensor], th.Tensor], grad_values: th.Tensor, out: th.Tensor | None = None
    ) -> th.Tensor:
        """
        :param cache: from :meth:`forward_cached`
        :param grad_values: ``∂L/∂values``, ``(n_agents, batch)``
        :param out: where to write the gradient (``None``: a new tensor)
        :return: ``∂L/∂params``, ``(n_agents, n_params)``
        """
        params, inputs, output = cache
        return th.cat(self._net.mlp.backward(params, inputs, output, grad_values.unsqueeze(-1)), dim=1, out=out)
