"""
Byzantine agents for robustness experiments: they send corrupted messages to the server.

An attack rewrites the rows of the chosen agents in what the server receives: the anchor
gradients (phase 1) and the parameter changes ``Δ_i`` (phase 3). Honest agents are left
as they are; they only feel the attack through the aggregate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th

ATTACKS = ("noise", "sign_flip", "scale")


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
        out = stacked.clone() if isinstance(stacked, th.Tensor) else stacked.copy()
        rows = out[self.agents]
        if self.kind == "noise":
            noise = self._rng.normal(0.0, self.scale, size=tuple(rows.shape))
            rows = th.as_tensor(noise, dtype=out.dtype, device=out.device) if isinstance(out, th.Tensor) else noise
        elif self.kind == "sign_flip":
            rows = -self.scale * rows
        else:
            rows = self.scale * rows
        out[self.agents] = rows
        return out

    def __repr__(self) -> str:
        return f"ByzantineAttack(agents={self.agents}, kind={self.kind!r}, scale={self.scale})"
