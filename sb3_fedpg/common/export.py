"""
The policy as an ONNX graph, for inference without Python, torch or this library.

:func:`export_onnx` writes the graph from a batch of observations to the actions that
``model.predict(obs, deterministic=True)`` returns for it: the argmax for ``Discrete`` (per component for
``MultiDiscrete``), the rounded probabilities for ``MultiBinary``, the Gaussian's mean clipped to the action space
for ``Box`` (gSDE's mean, squashed and rescaled when the policy squashes). It uses torch's exporter
(``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``): ``pip install "sb3-fedpg[export]"``.
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel
from stable_baselines3.common.preprocessing import is_image_space

#: The ONNX graph's input and output names.
OBSERVATION_INPUT = "observation"
ACTION_OUTPUT = "action"
#: Observation spaces the exported graph takes (a ``Dict`` would be several inputs: not supported).
EXPORT_OBSERVATION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
#: Action spaces whose deterministic action the graph computes.
EXPORT_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


class DeterministicActor(th.nn.Module):
    """
    ``policy.predict(obs, deterministic=True)`` as one torch module, with the same preprocessing (SB3's
    ``preprocess_obs``: floats, one-hot, images scaled to [0, 1]) and the same post-processing (clipping or unscaling
    of ``Box`` actions). This is what :func:`export_onnx` exports.

    :param policy: an SB3 actor-critic policy (it is used as it is: pass a copy to keep the original untouched)
    """

    low: th.Tensor  # Box action bounds (buffers)
    high: th.Tensor

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy
        action_space = policy.action_space
        self.squash = bool(policy.squash_output)
        if isinstance(action_space, spaces.Box):
            self.register_buffer("low", th.as_tensor(action_space.low, dtype=th.float32))
            self.register_buffer("high", th.as_tensor(action_space.high, dtype=th.float32))
        self.nvec = [int(n) for n in action_space.nvec] if isinstance(action_space, spaces.MultiDiscrete) else []
        self.action_shape = tuple(action_space.shape or ())

    def forward(self, observation: th.Tensor) -> th.Tensor:
        """
        :param observation: a batch of observations, as ``predict`` takes them (``(batch, *obs_shape)``)
        :return: the batch's deterministic actions, as ``predict`` returns them
        """
        policy = self.policy
        features = BaseModel.extract_features(policy, observation, policy.pi_features_extractor)
        logits = policy.action_net(policy.mlp_extractor.forward_actor(features))
        action_space = policy.action_space
        if isinstance(action_space, spaces.Discrete):
            return logits.argmax(dim=1)
        if isinstance(action_space, spaces.MultiDiscrete):
            return th.stack([part.argmax(dim=1) for part in th.split(logits, self.nvec, dim=1)], dim=1)
        if isinstance(action_space, spaces.MultiBinary):
            return th.round(th.sigmoid(logits)).reshape(-1, *self.action_shape)
        actions = logits.reshape(-1, *self.action_shape)  # the Gaussian's mean (gSDE's too)
        if self.squash:  # gSDE's tanh, then predict's unscale_action
            return self.low + 0.5 * (th.tanh(actions) + 1.0) * (self.high - self.low)
        return th.clamp(actions, self.low, self.high)


def _check_exportable(model: Any) -> ActorCriticPolicy:
    policy = getattr(model, "policy", model)
    if not isinstance(policy, ActorCriticPolicy):
        raise TypeError(f"export_onnx takes a model (or policy) with an SB3 actor-critic policy, got {type(policy).__name__}.")
    if not isinstance(policy.observation_space, EXPORT_OBSERVATION_SPACES):
        raise NotImplementedError(
            f"export_onnx: observation space {policy.observation_space} is not supported (the graph has one input: "
            f"{', '.join(s.__name__ for s in EXPORT_OBSERVATION_SPACES)}). A Dict observation would need one input per "
            "key; flatten it with gymnasium.wrappers.FlattenObservation before training to export the policy."
        )
    if not isinstance(policy.action_space, EXPORT_ACTION_SPACES):
        raise NotImplementedError(f"export_onnx: action space {policy.action_space} is not supported.")
    if policy.squash_output and not isinstance(policy.action_space, spaces.Box):
        raise NotImplementedError("export_onnx: squash_output with a non-Box action space is not supported.")
    return policy


def _example_observation(policy: ActorCriticPolicy, batch: int) -> th.Tensor:
    space = policy.observation_space
    if isinstance(space, spaces.Discrete):
        return th.zeros(batch, dtype=th.int64)
    dtype = th.uint8 if is_image_space(space, check_channels=False) and space.dtype == "uint8" else th.float32
    if isinstance(space, spaces.MultiDiscrete | spaces.MultiBinary):
        dtype = th.int64
    return th.zeros((batch, *(space.shape or ())), dtype=dtype)


def export_onnx(model: Any, path: str | pathlib.Path, opset_version: int | None = None) -> pathlib.Path:
    """
    Export the policy as an ONNX graph from a batch of observations (input ``observation``, shape
    ``(batch, *obs_shape)``, any batch size) to the actions ``model.predict(obs, deterministic=True)`` gives (output
    ``action``). The weights are stored in the file. The model is left as it is.

    The input's dtype follows the observation space: ``float32`` for a ``Box`` (``uint8`` for an image space of
    ``uint8``, scaled to [0, 1] inside the graph as ``predict`` does), ``int64`` for ``Discrete`` (indices, one-hot
    inside the graph), ``MultiDiscrete`` and ``MultiBinary``. The output is ``int64`` for ``Discrete`` and
    ``MultiDiscrete``, ``float32`` otherwise.

    :param model: a federated model (``FederatedPG``, ``FederatedPPO``, ``FederatedSVRPGM``), any SB3 model with an
        actor-critic policy, or such a policy
    :param path: the ``.onnx`` file to write
    :param opset_version: the ONNX opset (``None``: the exporter's default)
    :return: the path written
    :raises ImportError: when ``onnx``/``onnxscript`` are missing (``pip install "sb3-fedpg[export]"``)
    :raises NotImplementedError: for an observation or action space the graph does not cover (a ``Dict``
        observation, a ``Tuple`` action), naming it
    """
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f'export_onnx needs {" and ".join(missing)}: pip install "sb3-fedpg[export]"')
    policy = _check_exportable(model)
    # A CPU copy built as SB3's load builds one (a deepcopy fails on gSDE's non-leaf noise tensors).
    clone = type(policy)(**policy._get_constructor_parameters())
    clone.load_state_dict(policy.state_dict())
    clone.set_training_mode(False)
    actor = DeterministicActor(clone.to("cpu")).eval()
    example = _example_observation(policy, batch=2)  # not 1: the exporter specialises a dimension of size 1
    final = pathlib.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with th.no_grad():
        th.onnx.export(
            actor,
            (example,),
            str(final),
            input_names=[OBSERVATION_INPUT],
            output_names=[ACTION_OUTPUT],
            opset_version=opset_version,
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: th.export.Dim("batch")},),
            verbose=False,
        )
    return final
