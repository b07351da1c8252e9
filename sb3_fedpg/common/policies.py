"""
SB3's actor-critic policies, with one fix the federated split needs.

Federated algorithms build the policy with ``share_features_extractor=False`` (the actor is federated, each
agent's critic local). SB3's ``ActorCriticPolicy._get_constructor_parameters`` leaves that flag out, so
``policy.save`` / ``ActorCriticPolicy.load`` of the policy alone would rebuild a *shared* extractor and load the
critic's extractor weights into the actor. These subclasses keep the flag; nothing else changes.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy


class _KeepsExtractorSharing(ActorCriticPolicy):
    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "share_features_extractor": self.share_features_extractor}


class FederatedActorCriticPolicy(_KeepsExtractorSharing):
    """SB3's ``ActorCriticPolicy`` (``MlpPolicy``) whose saved constructor parameters keep the extractor sharing."""


class FederatedActorCriticCnnPolicy(_KeepsExtractorSharing, ActorCriticCnnPolicy):
    """SB3's ``ActorCriticCnnPolicy`` (``CnnPolicy``, ``NatureCNN``) whose saved parameters keep the extractor sharing."""


class FederatedMultiInputActorCriticPolicy(_KeepsExtractorSharing, MultiInputActorCriticPolicy):
    """SB3's ``MultiInputActorCriticPolicy`` (``MultiInputPolicy``) whose saved parameters keep the extractor sharing."""
