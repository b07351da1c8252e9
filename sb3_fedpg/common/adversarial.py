"""
Byzantine agents for robustness experiments: they send corrupted messages to the server.

An attack rewrites the rows of the chosen agents in what the server receives: the anchor
gradients (phase 1) and the parameter changes ``Δ_i`` (phase 3). Honest agents are left
as they are; they only feel the attack through the aggregate. :func:`faulty_message` is the
other half of the fault model: what a *buggy* agent sends (NaN, a wrong shape, a huge vector),
used by the Flower client's fault injection and by the server-side validation tests.

Only NumPy is imported at module level (torch tensors are handled by duck typing), so a
torch-free process can use the fault model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ATTACKS = ("noise", "sign_flip", "scale")
#: What a faulty agent may send instead of its vector (see :func:`faulty_message`).
FAULT_KINDS = ("none", "nan", "shape", "huge")


def faulty_message(vector: np.ndarray, kind: str) -> np.ndarray:
    """
    What a buggy agent might send instead of ``vector``.

    :param vector: the honest vector ``(p,)``
    :param kind: ``"none"`` (unchanged), ``"nan"`` (a NaN entry), ``"shape"`` (one value too many) or
        ``"huge"`` (every entry shifted by ``1e12``)
    :return: the faulty vector (a copy)
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}: choose one of {FAULT_KINDS}.")
    vector = np.array(vector, copy=True)
    if kind == "nan":
        vector[0] = np.nan
    elif kind == "shape":
        vector = np.concatenate([vector, vector[:1]])
    elif kind == "huge":
        vector = vector + 1e12
    return vector


class ByzantineAttack:
    """
    Corrupt the messages of some agents.

    :param agents: indices of the adversarial agents
    :param kind: ``"noise"`` (replace by Gaussian noise of std ``scale``), ``"sign_flip"``
        (send ``−scale ×`` the honest message) or ``"scale"`` (send ``scale ×`` the honest message)
    :param scale: strength of the attack
    :param seed: seed of the noise generator
    """

    def __init__(self, agents: Sequence[int], kind: str = "sign_flip", scale: float = 10.0, seed: int = 0) -> None:
        if kind not in ATTACKS:
            raise ValueError(f"unknown attack {kind!r}: choose one of {ATTACKS}.")
        if len(agents) == 0:
            raise ValueError("ByzantineAttack needs at least one adversarial agent index.")
        if min(agents) < 0:
            raise ValueError(f"agent indices must be >= 0, got {list(agents)}.")
        self.agents = sorted(set(int(a) for a in agents))
        self.kind = kind
        self.scale = float(scale)
        self._rng = np.random.default_rng(seed)

    def __call__(self, stacked: Any, phase: str) -> Any:
        """
        :param stacked: what the agents send, ``(n_agents, p)``
        :param phase: ``"anchor"`` or ``"delta"`` (the same attack is used in both)
        :return: what the server receives
        """
        if max(self.agents) >= stacked.shape[0]:
            raise ValueError(f"adversarial agent {max(self.agents)} does not exist (there are {stacked.shape[0]} agents).")
        is_tensor = hasattr(stacked, "clone")  # a torch tensor (duck-typed: torch is not imported here)
        out = stacked.clone() if is_tensor else stacked.copy()
        rows = out[self.agents]
        if self.kind == "noise":
            noise = self._rng.normal(0.0, self.scale, size=tuple(rows.shape))
            rows = out.new_tensor(noise) if is_tensor else noise
        elif self.kind == "sign_flip":
            rows = -self.scale * rows
        else:
            rows = self.scale * rows
        out[self.agents] = rows
        return out

    def __repr__(self) -> str:
        return f"ByzantineAttack(agents={self.agents}, kind={self.kind!r}, scale={self.scale})"
