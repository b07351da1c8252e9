"""
The comparison at real budgets (issue 13, item 2): Fast-FedPG, FedAvg-PG, FederatedPPO with and without the drift
correction, central SB3 PPO and A2C on the pooled envs, and local-only PPO.

Families (heterogeneity ``h = 1``; cheap ones first): the CartPole family (500k total env steps), the CartPole family
whose agents' poles differ in length (transition heterogeneity, 500k), the heterogeneous
point mass and two-link arm (400k), sampled LQR (400k), the Pendulum family (1M) and the HalfCheetah family (1M,
MuJoCo). Every method gets the same budget of **total** env steps (all agents together; local-only: ``budget / N``
per agent's model). Methods (``METHODS``) and per-family hyperparameters (``FAMILIES``) are built from
``zoo_configs/<algo>.yml`` with the overrides listed there by :func:`neural_runs.algo_hyperparams`:

- ``fedpg``: ``FederatedPG`` with the library's default correction; ``fedavg``: the same with ``correction=False``;
- ``fedppo`` / ``fedppo_corr``: ``FederatedPPO`` without / with the linear correction ⟨g − a_i, θ⟩;
- ``fedppo_surr``: ``FederatedPPO`` with the surrogate correction (the advantage shift inside the clipped surrogate);
  ``fedppo_snr``: the same with ``variance_control="snr_damping"`` (each agent's correction shrunk by its measured
  signal-to-noise ratio); ``fedppo_pa`` (Pendulum, CartPole, HalfCheetah): no correction and per-agent advantage
  normalisation, the library's default before the shared scale;
- ``ppo_agent``: central SB3 PPO whose critic reads the agent one-hot (``sb3_fedpg.common.agent_aware``);
- ``ppo`` / ``a2c``: SB3 PPO / A2C trained centrally on the pooled federation (the privacy-violating reference);
- ``local_ppo``: ``N`` SB3 PPO models, agent ``i``'s trained alone on agent ``i``'s env (``budget / N`` steps each).

Score: ``J`` is the global objective (mean over agents of each agent's return under its own reward, stochastic
policy, :func:`neural_runs.stochastic_returns`); LQR uses the exact per-agent costs of the deterministic gain
``K = −W`` of the linear policy instead (``J = −C̄(K)``). The normalised score is ``s = (J − J_random) /
(J_best − J_random)`` with ``J_random`` the uniformly random policy and ``J_best`` the best seed-mean final ``J`` of
any method (LQR: ``s = C̄* / C̄(K)``, the exact optimum). The **target** is ``s ≥ 0.9`` (90 % of the best J);
for each run: env steps and training wall-clock to the first evaluation at the target (evaluations excluded), and
stability, the fraction of later evaluations still at the target.

Runs on the benchmark harness (``benchmarks/harness``): each run is cached under
``benchmarks/cache/ppo_comparison/`` (committed) keyed by a hash of its full configuration (the algorithm's
constructor defaults included, so a changed library default starts new runs), so a sweep resumes where it stopped,
from a fresh clone too. With ``--workers 1`` the runs go family by family (cheap ones first), seed by seed with the
methods interleaved so that machine load affects every method alike, the local-only runs last.

Run: ``python benchmarks/ppo_comparison.py`` (run what is missing, then rebuild
``benchmarks/results/ppo_comparison.{json,md,png}`` and ``ppo_comparison_hyperparams.md``; long: ``nohup nice -n 10
... --workers 1 &``), ``--report`` (from the cache alone), ``--families`` / ``--methods`` / ``--seeds`` (a subset),
``--quick`` (tiny budgets into ``runs/ppo_comparison_quick/``).
"""

from __future__ import annotations

import copy
import inspect
import json
import pathlib
import sys
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import comparison as cmp  # the comparison's per-family FedPG settings
import heterogeneity as het  # the point-mass / arm hyperparameters
import neural_runs as nr  # the method specs, training with curves, zoo entries, the sampled LQR, the random policy
from harness import Context, Report, Run, Settings, Study
from harness.keys import jsonable

ROOT = nr.ROOT
RESULTS = nr.RESULTS
HETEROGENEITY = 1.0
TARGET = 0.9

MethodSpec = nr.MethodSpec
METHODS: dict[str, MethodSpec] = {
    "fedpg": MethodSpec("fedpg"),
    "fedavg": MethodSpec("fedpg", {"correction": False}),
    # each FederatedPPO row spells out its correction and noise control: a changed default does not change the row
    "fedppo": MethodSpec("fedppo", {"correction": False, "variance_control": "none"}),
    "fedppo_corr": MethodSpec("fedppo", {"correction": True, "variance_control": "none"}),
    "fedppo_surr": MethodSpec("fedppo", {"correction": "surrogate", "variance_control": "none"}),
    "fedppo_snr": MethodSpec("fedppo", {"correction": "surrogate", "variance_control": "snr_damping"}),
    # the default before advantage normalisation was shared across agents (each agent by its own scale)
    "fedppo_pa": MethodSpec("fedppo", {"correction": False, "variance_control": "none", "normalize_advantage": "per_agent"}),
    # FedSVRPG-M (Wang et al., ICML 2024): the batches of Fast-FedPG on the family, its own SGD step size (tuned)
    "fedsvrpgm": MethodSpec("fedsvrpgm"),
    "ppo": MethodSpec("ppo"),
    # central PPO whose critic reads the agent one-hot (the actor does not): the fair central baseline
    "ppo_agent": MethodSpec("ppo", {"agent_aware_critic": True}),
    "a2c": MethodSpec("a2c"),
    "local_ppo": MethodSpec("ppo", local=True),
    # central PPO with rl-zoo's tuned HalfCheetah optimisation (the family's shared PPO settings replace it)
    "ppo_zoo": MethodSpec("ppo", {}),  # its `fixed` is filled in below, from zoo_configs/ppo.yml
    # central PPO without gradient clipping, a diagnostic: SB3 clips the actor's and critic's gradients *together*,
    # FederatedPPO each agent's actor and critic separately (the joint clip did not turn out to be why PPO failed)
    "ppo_noclip": MethodSpec("ppo", {"max_grad_norm": 1e9}),
}
#: run only on the families that list them under "extra_methods"
OPTIONAL_METHODS = ("ppo_zoo", "ppo_noclip", "fedppo_pa")
#: the central PPO rows FederatedPPO is measured against (the one that gets to 90 % first)
CENTRAL_PPO = ("ppo", "ppo_agent", "ppo_zoo", "ppo_noclip")
LABELS = {
    "fedpg": "Fast-FedPG",
    "fedavg": "FedAvg-PG",
    "fedppo": "FederatedPPO",
    "fedppo_corr": "FederatedPPO + correction",
    "fedppo_surr": "FederatedPPO + surrogate correction",
    "fedppo_snr": "FederatedPPO + surrogate correction, SNR-damped",
    "fedppo_pa": "FederatedPPO, per-agent advantage scale",
    "fedsvrpgm": "FedSVRPG-M",
    "ppo": "SB3 PPO (central, pooled)",
    "ppo_agent": "SB3 PPO, agent-aware critic (central)",
    "a2c": "SB3 A2C (central, pooled)",
    "local_ppo": "local-only PPO",
    "ppo_zoo": "SB3 PPO, rl-zoo's optimisation (central, pooled)",
    "ppo_noclip": "SB3 PPO, no gradient clipping (central, pooled)",
}
COLORS = {
    "fedpg": "tab:blue",
    "fedavg": "tab:red",
    "fedppo": "tab:purple",
    "fedppo_corr": "tab:cyan",
    "fedppo_surr": "tab:pink",
    "fedppo_snr": "deeppink",
    "fedppo_pa": "indigo",
    "fedsvrpgm": "gold",
    "ppo": "tab:green",
    "ppo_agent": "darkgreen",
    "a2c": "tab:orange",
    "local_ppo": "tab:gray",
    "ppo_zoo": "tab:olive",
    "ppo_noclip": "tab:brown",
}


def _fedpg_from_common(common: dict[str, Any], n_agents: int, local_steps: int) -> dict[str, Any]:
    """``FederatedPG`` overrides from a benchmark's common hyperparameters (``n_envs`` counts all agents' envs)."""
    out = {k: copy.deepcopy(v) for k, v in common.items() if k != "n_envs_per_agent"}
    return {**out, "n_envs": common["n_envs_per_agent"] * n_agents, "local_steps": local_steps}


def _zoo_entry(algo: str, env_id: str) -> dict[str, Any]:
    """:return: the ``zoo_configs/<algo>.yml`` entry for ``env_id`` (a copy)"""
    from sb3_fedpg.zoo.config import load_config_file, select_entry

    conf = ROOT / "zoo_configs" / f"{algo}.yml"
    return copy.deepcopy(select_entry(load_config_file(conf), env_id, str(conf)))


def _fedppo_from_ppo(env_id: str) -> dict[str, Any]:
    """``FederatedPPO`` overrides equal to SB3 PPO's zoo entry (without gSDE, which ``FederatedPPO`` lacks)."""
    entry = _zoo_entry("ppo", env_id)
    return {k: v for k, v in entry.items() if k not in ("use_sde", "sde_sample_freq", "env_kwargs")}


#: the point mass and the arm: the heterogeneity benchmark's discount and network for every method; FederatedPG
#: exactly as there (Adam 3e-3, unnormalised advantages, local critic) with H = 5, where the paper's correction
#: beat FedAvg-PG in the noise benchmark; FederatedPPO without per-agent advantage normalisation (which would
#: rescale each agent's reward and change the objective)
_SHAPED = {"gamma": het.COMMON["gamma"], "policy_kwargs": {"net_arch": [32, 32]}}
#: LQR: linear policy (exact evaluation of its gain), the noise benchmark's critic and discount
_LINEAR = {"gamma": nr.LQR_COMMON["gamma"], "policy_kwargs": nr.LQR_COMMON["policy_kwargs"]}


def _zoo_values(algo: str, env_id: str, keys: Any) -> dict[str, Any]:
    """:return: the values of ``keys`` in the zoo_configs entry of ``algo`` for ``env_id``"""
    entry = _zoo_entry(algo, env_id)
    return {k: entry[k] for k in keys}


#: HalfCheetah: the zoo entry's network (rl-zoo's tuned HalfCheetah PPO: [256, 256] ReLU, log std -2) with SB3 PPO's
#: default optimisation. rl-zoo's step size 2.06e-5 (20 epochs, clip 0.1, gamma 0.98) is tuned for `normalize: true`,
#: which federated training cannot use (the statistics would pool every agent's data); without it neither PPO nor
#: FederatedPPO got far from standing still in 1M steps (-1682 and -1605 vs -2000; those runs stay in the cache).
_CHEETAH_OPTIMISATION = {
    "learning_rate": 3e-4,
    "n_epochs": 10,
    "clip_range": 0.2,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "ent_coef": 0.0,
    "max_grad_norm": 0.5,
    "vf_coef": 0.5,
}
METHODS["ppo_zoo"] = MethodSpec("ppo", _zoo_values("ppo", "sb3_fedpg/HeteroHalfCheetah-v0", _CHEETAH_OPTIMISATION))


def _shaped_family(env_id: str) -> dict[str, Any]:
    """The point mass or the arm (the heterogeneity benchmark's federations and budget)."""
    return {
        "env_id": env_id,
        "budget": 400_000,
        "n_agents": 4,
        "n_evals": 20,
        "eval_envs_per_agent": 2,
        "final_episodes_per_env": 8,
        "fedpg": _fedpg_from_common(het.COMMON, 4, 5),
        "fedppo": {**_SHAPED, "normalize_advantage": False},
        "a2c": _SHAPED,
        "ppo": _SHAPED,
    }


def _families() -> dict[str, dict[str, Any]]:
    return {
        "cartpole": {
            "env_id": "sb3_fedpg/HeteroCartPole-v0",
            "budget": 500_000,
            "n_agents": 8,
            "n_evals": 20,
            "eval_envs_per_agent": 2,
            "final_episodes_per_env": 4,
            "fedpg": cmp.FAMILIES["cartpole"]["fedpg"],
            "fedppo": {},
            "a2c": {},
            "ppo": {},
            "extra_methods": ["fedppo_pa"],
        },
        # transition heterogeneity: each agent's pole has its own length, the reward is shared
        "cartpole_length": {
            "env_id": "sb3_fedpg/HeteroCartPoleLength-v0",
            "budget": 500_000,
            "n_agents": 8,
            "n_evals": 20,
            "eval_envs_per_agent": 2,
            "final_episodes_per_env": 4,
            # no single-agent dynamics to train an agent alone on (neural_runs.train_curve)
            "skip": ["local_ppo"],
            "fedpg": cmp.FAMILIES["cartpole"]["fedpg"],
            "fedppo": {},
            "a2c": {},
            "ppo": {},
        },
        "pointmass": _shaped_family("sb3_fedpg/HeteroPointMass-v0"),
        "arm": _shaped_family("sb3_fedpg/HeteroArm-v0"),
        "lqr": {
            "env_id": nr.LQR["env_id"],
            "budget": 400_000,
            "n_agents": nr.LQR["n_agents"],
            "n_evals": 20,
            "eval_envs_per_agent": 1,
            "final_episodes_per_env": 1,
            "exact_lqr_gamma": nr.LQR["gamma"],
            # local-only training needs shared single-agent dynamics; the LQR family builds all agents' at once
            "skip": ["local_ppo"],
            # a constant step here (noise_correction decays it over its much longer LQR budget)
            "fedpg": _fedpg_from_common({**nr.LQR_COMMON, "learning_rate": 1e-2}, nr.LQR["n_agents"], 5),
            "fedppo": {**_LINEAR, "normalize_advantage": False},
            "a2c": _LINEAR,
            "ppo": _LINEAR,
        },
        "pendulum": {
            "env_id": "sb3_fedpg/HeteroPendulum-v0",
            "budget": 1_000_000,
            "n_agents": 8,
            "n_evals": 20,
            "eval_envs_per_agent": 2,
            "final_episodes_per_env": 4,
            "fedpg": cmp.FAMILIES["pendulum"]["fedpg"],
            "fedppo": {},
            "a2c": {},
            "ppo": {},
            "extra_methods": ["fedppo_pa"],
        },
        "halfcheetah": {
            "env_id": "sb3_fedpg/HeteroHalfCheetah-v0",
            "budget": 1_000_000,
            "n_agents": 4,
            "n_evals": 20,
            "eval_envs_per_agent": 1,
            "final_episodes_per_env": 4,
            "pilot_fraction": 0.01,  # the pilot runs of the sweep before the harness (10k steps); not a run setting
            "fedpg": cmp.FAMILIES["halfcheetah"]["fedpg"],
            # fedppo.yml has no HalfCheetah entry: SB3 PPO's, with the same optimisation overrides
            "fedppo": {**_fedppo_from_ppo("sb3_fedpg/HeteroHalfCheetah-v0"), **_CHEETAH_OPTIMISATION},
            "a2c": {},
            "ppo": _CHEETAH_OPTIMISATION,
            "extra_methods": ["ppo_zoo", "ppo_noclip", "fedppo_pa"],
        },
    }


def _constructor_defaults(algo_class: type) -> dict[str, Any]:
    # what cannot change a run's numbers: n_envs_per_agent only applies to an env id (every run here passes a built
    # federated env), the rollout buffer is a view of the batch for callbacks
    skip = {"self", "policy", "env", "_init_setup_model", "verbose", "device", "tensorboard_log", "n_envs_per_agent"}
    if algo_class.__module__.startswith("sb3_fedpg"):  # SB3's own classes always had them: their keys keep them
        skip |= {"rollout_buffer_class", "rollout_buffer_kwargs"}
    params = inspect.signature(algo_class.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in skip and p.default is not inspect.Parameter.empty}


#: FedSVRPG-M's SGD step size per family: the best of ``svrpgm_tuning.GRID`` on the tuning seed
#: (``benchmarks/svrpgm_tuning.py`` → ``results/svrpgm_tuning.md``; a test checks this table against it)
SVRPGM_LEARNING_RATES: dict[str, float] = {
    "cartpole": 0.3,
    "cartpole_length": 0.1,
    "pointmass": 0.01,
    "arm": 0.003,
    "lqr": 0.01,
    "pendulum": 0.003,
    "halfcheetah": 0.03,
}
#: FederatedPG's keys FedSVRPG-M takes over on a family (its batches, discount, critic and network), not its optimiser
_SVRPGM_SHARED_KEYS = (
    "estimator",
    "n_envs",
    "n_steps",
    "local_steps",
    "gamma",
    "gae_lambda",
    "baseline",
    "normalize_advantage",
    "critic_learning_rate",
    "max_grad_norm",
    "policy_kwargs",
)


def _with_svrpgm(name: str, family: dict[str, Any]) -> dict[str, Any]:
    """
    The family with FedSVRPG-M's overrides: Fast-FedPG's batch structure and gradient estimator on the family
    (``n_envs``, ``n_steps``, local steps, discount, GAE with a local critic, network: the same samples per round and
    the same advantages), the momentum and importance-weight truncation of the authors' experiments
    (``zoo_configs/fedsvrpgm.yml``), and its own tuned SGD step size. The paper's GPOMDP estimator is not used: on the
    families' short rollout segments (8-16 steps, no bootstrapping) its truncated returns are biased, and FedSVRPG-M with
    it got worse than the random policy on the CartPole family at every step size (a first tuning pass, not kept).
    """
    # FederatedPG's values as its runs use them: its defaults (e.g. estimator="gae" with a local critic, where
    # FedSVRPG-M's own default is the paper's GPOMDP) overridden by the family's entry
    _, entry = nr.algo_hyperparams(family, "fedpg", HETEROGENEITY, METHODS)
    fedpg = {**_constructor_defaults(nr.algorithm_class("fedpg")), **entry}
    svrpgm = {k: copy.deepcopy(fedpg[k]) for k in _SVRPGM_SHARED_KEYS if k in fedpg}
    if name in SVRPGM_LEARNING_RATES:
        svrpgm["learning_rate"] = SVRPGM_LEARNING_RATES[name]
    return {**family, "fedsvrpgm": svrpgm}


FAMILIES = {name: _with_svrpgm(name, family) for name, family in _families().items()}


def _quick_families() -> dict[str, dict[str, Any]]:
    """Tiny federations and budgets: CartPole (every method) and sampled LQR (three methods); no MuJoCo."""
    small_ppo = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}
    small_fedppo = {"n_steps": 16, "batch_size": 32, "n_epochs": 1}
    common = {"n_evals": 2, "eval_envs_per_agent": 1, "final_episodes_per_env": 1, "n_agents": 2}
    return {
        "cartpole": {
            **FAMILIES["cartpole"],
            **common,
            "budget": 2048,
            "extra_methods": [],
            "fedpg": {"n_envs": 4, "n_steps": 16, "local_steps": 2},
            "fedsvrpgm": {**FAMILIES["cartpole"]["fedsvrpgm"], "n_envs": 4, "n_steps": 16, "local_steps": 2},
            "fedppo": {"n_envs": 4, **small_fedppo},
            "a2c": {"n_envs": 4},
            "ppo": {"n_envs": 4, **small_ppo},
        },
        "lqr": {
            **FAMILIES["lqr"],
            **common,
            "budget": 2048,
            "fedpg": {**FAMILIES["lqr"]["fedpg"], "n_envs": 4, "n_steps": 16, "local_steps": 2},
            "fedppo": {**FAMILIES["lqr"]["fedppo"], "n_envs": 4, **small_fedppo},
            "a2c": {**FAMILIES["lqr"]["a2c"], "n_envs": 4},
            "ppo": {**FAMILIES["lqr"]["ppo"], "n_envs": 4, **small_ppo},
            # the exact evaluation, the correction, the reference
            "skip": ["local_ppo", "fedavg", "fedppo", "fedppo_surr", "fedppo_snr", "fedsvrpgm", "ppo_agent", "a2c"],
        },
    }


QUICK_FAMILIES = _quick_families()


def methods_of(family: dict[str, Any]) -> list[str]:
    """:return: the methods run on a family"""
    extra = family.get("extra_methods", ())
    return [m for m in METHODS if m not in family.get("skip", ()) and (m not in OPTIONAL_METHODS or m in extra)]


# ------------------------------------------------------------------------------ evaluation
class LQRReturns:
    """
    Exact per-agent returns ``−C_i(K)`` of the deterministic gain ``K = −W`` of a linear policy
    (``W`` the action layer's weight), on the family's LQR problem (``−inf`` for a destabilising gain).

    :param family: an LQR entry of ``FAMILIES``
    :param heterogeneity: the heterogeneity knob
    """

    def __init__(self, family: dict[str, Any], heterogeneity: float) -> None:
        from sb3_fedpg.envs.lqr import lqr_problem

        from sb3_fedpg.lqr.exact import global_cost, optimal_gain

        self.problem = lqr_problem(family["n_agents"], gamma=family["exact_lqr_gamma"], heterogeneity=heterogeneity)
        self.optimal_cost = float(global_cost(self.problem, optimal_gain(self.problem).gain))

    def returns(self, gain: np.ndarray) -> np.ndarray:
        """:return: ``−C_i(K)`` of every agent for the gain ``K``"""
        from sb3_fedpg.lqr.exact import agent_costs

        return -np.asarray(agent_costs(self.problem, gain), dtype=float)

    def __call__(self, model: Any, eval_env: Any, n_episodes: int) -> np.ndarray:
        weight = model.policy.action_net.weight.detach().cpu().numpy().astype(np.float64)
        # an agent-aware baseline's observations end with the agent one-hot, which its actor never reads
        return self.returns(-weight[:, : self.problem.A.shape[0]])


def evaluator_of(family: dict[str, Any]) -> nr.Evaluator:
    """:return: the family's evaluation (exact for LQR, else the stochastic policy's returns)"""
    return LQRReturns(family, HETEROGENEITY) if "exact_lqr_gamma" in family else nr.stochastic_returns


def shared_policy_bound(family: dict[str, Any], heterogeneity: float = HETEROGENEITY) -> float | None:
    """
    HalfCheetah: an upper bound on ``J`` for any policy shared by all agents. Their dynamics and observations are the
    same (no agent id), so every agent's cheetah runs the same speeds; agent ``i`` loses ``|v − v_i|`` per step, and
    the speed that loses least on average is the median target. Control costs (≥ 0) and the start from rest only
    lower ``J`` further.

    :param family: the family
    :param heterogeneity: the heterogeneity knob (``h = 0``: every agent wants the same speed, the bound is 0)
    :return: ``−T · min_v mean_i |v − v_i|`` (``T`` the episode length), ``None`` for the other families
    """
    if "HalfCheetah" not in family["env_id"]:
        return None
    import gymnasium as gym
    from sb3_fedpg.envs import HalfCheetahVelocityReward

    targets = HalfCheetahVelocityReward(family["n_agents"], heterogeneity).targets.astype(float)
    horizon = gym.spec("HalfCheetah-v5").max_episode_steps
    return 0.0 - horizon * float(np.abs(np.median(targets) - targets).mean())  # 0.0 -: no "-0" at h = 0


def reference_returns(family: dict[str, Any], seed: int) -> dict[str, float | None]:
    """
    :return: ``J`` of the uniformly random policy and of the zero action (``None`` for discrete actions: for
        HalfCheetah, standing still) on the seed's evaluation federation; LQR: no random policy (its evaluation is
        exact), the exact ``J`` of the zero gain
    """
    from sb3_fedpg import make_federated_vec_env

    if "exact_lqr_gamma" in family:
        lqr = LQRReturns(family, HETEROGENEITY)
        gain = np.zeros_like(lqr.problem.B.T)
        return {"random": None, "zero": float(np.mean(lqr.returns(gain)))}

    with nr.quiet_native_output("HalfCheetah" in family["env_id"]):
        env = make_federated_vec_env(
            family["env_id"],
            n_agents=family["n_agents"],
            n_envs_per_agent=family["eval_envs_per_agent"],
            env_kwargs={"heterogeneity": HETEROGENEITY},
            seed=10_000 + seed,
        )
    episodes = family["final_episodes_per_env"]
    random = nr.RandomPolicy(env.action_space, seed)
    out: dict[str, float | None] = {"random": float(np.mean(nr.stochastic_returns(random, env, episodes)))}
    shape = getattr(env.action_space, "shape", ())
    out["zero"] = None
    if getattr(env.action_space, "n", None) is None:

        class Zero:
            def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
                return np.zeros((len(obs), *shape), dtype=np.float32), None

        out["zero"] = float(np.mean(nr.stochastic_returns(Zero(), env, episodes)))
    env.close()
    return out


# ------------------------------------------------------------------------------ runs
def train(
    family_name: str, family: dict, heterogeneity: float, method: str, spec: list, seed: int, hyperparams: dict
) -> dict[str, Any]:
    """
    One run (:func:`neural_runs.run_one`): the curves with timings. ``spec`` is the method (its algorithm, fixed
    arguments, local-only), so that a study that adds methods (``ppo_epochs``) runs in worker processes too;
    ``hyperparams``, the constructor's defaults overridden by the zoo entry with the overrides, is in the key: a
    changed library default starts new runs exactly where a run uses it.
    """
    methods = {method: MethodSpec(*spec)}
    if jsonable(resolved(family, method, heterogeneity, methods)) != hyperparams:
        raise ValueError(f"{family_name} {method}: the zoo entry is not the run's hyperparams")
    result = nr.run_one(family_name, family, heterogeneity, method, seed, methods, evaluator_of(family))
    return result | {"algo": spec[0]}


def resolved(family: dict[str, Any], method: str, heterogeneity: float, methods: dict[str, MethodSpec]) -> dict:
    """:return: a method's arguments: its algorithm's constructor defaults overridden by its zoo entry"""
    algo, entry = nr.algo_hyperparams(family, method, heterogeneity, methods)
    return {**_constructor_defaults(nr.algorithm_class(algo)), **entry}


def run(
    name: str,
    family: dict[str, Any],
    method: str,
    seed: int,
    heterogeneity: float = HETEROGENEITY,
    methods: dict[str, MethodSpec] | None = None,
) -> Run:
    """:return: one (family, method, seed) run; its family without the other algorithms' overrides"""
    spec = (methods or METHODS)[method]
    own = {k: v for k, v in family.items() if k not in (*nr.ALGOS, "pilot_fraction", "extra_methods")}
    own |= {spec.algo: family[spec.algo]} if spec.algo in family else {}
    hyperparams = jsonable(resolved(family, method, heterogeneity, methods or METHODS))
    config = dict(family_name=name, family=own, heterogeneity=heterogeneity, method=method, spec=list(spec), seed=seed)
    return Run(train, config | {"hyperparams": hyperparams}, f"{name}_{method}_s{seed}")


def references(family: dict[str, Any], seed: int) -> dict[str, float | None]:
    """:func:`reference_returns` as a run of the harness"""
    return reference_returns(family, seed)


def reference_run(name: str, family: dict[str, Any], seed: int) -> Run:
    """:return: the run of a family's random / zero-action references on a seed's evaluation federation"""
    config = {"family": {k: v for k, v in family.items() if k not in (*nr.ALGOS, "extra_methods")}, "seed": seed}
    return Run(references, config, f"reference_{name}_s{seed}")


def families_of(s: Settings) -> dict[str, dict[str, Any]]:
    """:return: the families the settings name (``--quick``: the tiny ones)"""
    return {name: (QUICK_FAMILIES if s.scale == "quick" else FAMILIES)[name] for name in s.families}


def family_runs(s: Settings) -> list[Run]:
    """:return: every (family, method, seed) run: family by family, seed by seed with the methods interleaved"""
    fams = families_of(s)
    return [run(n, f, m, seed) for n, f in fams.items() for seed in s.seeds for m in methods_of(f) if m in s.methods]


def runs(s: Settings) -> list[Run]:
    """:return: the references, then the runs, the local-only ones (``N`` models each, the slowest) last"""
    refs = [reference_run(name, family, seed) for name, family in families_of(s).items() for seed in s.seeds]
    return refs + sorted(family_runs(s), key=lambda r: r.config["spec"][2])  # stable


# ------------------------------------------------------------------------------ summary
def score_of(returns: np.ndarray, ref: dict[str, float]) -> np.ndarray:
    """:return: the normalised score of global returns (LQR: ``C̄*/C̄``; else ``(J − J_random)/(J_best − J_random)``)"""
    returns = np.asarray(returns, dtype=float)
    if ref.get("optimal") is not None:
        with np.errstate(divide="ignore"):
            return np.where(np.isfinite(returns), ref["optimal"] / returns, 0.0)
    return (returns - ref["random"]) / (ref["best"] - ref["random"])


def target_stats(run: dict[str, Any], ref: dict[str, float]) -> dict[str, Any]:
    """:return: the run's env steps and training wall-clock to the target, and its stability after the target"""
    score = score_of(run["global_return"], ref)
    hits = np.flatnonzero(score >= TARGET)
    if not len(hits):
        return {"steps": None, "wall": None, "cpu": None, "stability": None}
    first = int(hits[0])
    later = score[first + 1 :]
    return {
        "steps": float(run["timesteps"][first]),
        "wall": float(run["wall"][first]),
        "cpu": float(run["cpu"][first]),
        "stability": float(np.mean(later >= TARGET)) if len(later) else None,
    }


def _median_with_misses(values: list[float | None]) -> float | None:
    """:return: the median over seeds counting a miss as infinite (``None`` when most seeds missed)"""
    if not values:
        return None
    med = float(np.median([np.inf if v is None else v for v in values]))
    return med if np.isfinite(med) else None


def summarize(
    runs: list[dict[str, Any]],
    families: dict[str, dict[str, Any]],
    references: dict[str, list[dict[str, Any]]],
    seeds: list[int],
) -> dict[str, Any]:
    """Per family: the references, and per method the final J, score, targets, stability and compute."""
    out: dict[str, Any] = {}
    for name, family in families.items():
        fam_runs = [r for r in runs if r["family"] == name]
        if not fam_runs:
            continue
        finals = {m: [r["final_global"] for r in fam_runs if r["method"] == m] for m in methods_of(family)}
        refs = references[name]
        ref: dict[str, Any] = {
            "random": None if refs[0]["random"] is None else float(np.mean([r["random"] for r in refs])),
            "zero": None if refs[0]["zero"] is None else float(np.mean([r["zero"] for r in refs])),
            "shared_bound": shared_policy_bound(family),
        }
        if "exact_lqr_gamma" in family:
            ref["optimal"] = -LQRReturns(family, HETEROGENEITY).optimal_cost
            ref["best"], ref["best_method"] = ref["optimal"], "exact optimum"
        else:
            means = {m: float(np.mean(v)) for m, v in finals.items() if v}
            ref["best_method"] = max(means, key=means.__getitem__)
            ref["best"] = means[ref["best_method"]]
        cells: dict[str, Any] = {}
        for method in methods_of(family):
            sel = sorted((r for r in fam_runs if r["method"] == method), key=lambda r: r["seed"])
            if not sel:
                cells[method] = {"complete": 0, "of": len(seeds)}
                continue
            values = np.asarray([r["final_global"] for r in sel])
            targets = [target_stats(r, ref) for r in sel]
            stab = [t["stability"] for t in targets if t["stability"] is not None]
            cells[method] = {
                "complete": len(sel),
                "of": len(seeds),
                "seeds": [r["seed"] for r in sel],
                "finals": values.tolist(),
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "score": float(score_of(np.array([values.mean()]), ref)[0]),
                "reached": sum(t["steps"] is not None for t in targets),
                "per_seed": targets,
                "steps_to_target": _median_with_misses([t["steps"] for t in targets]),
                "wall_to_target": _median_with_misses([t["wall"] for t in targets]),
                "cpu_to_target": _median_with_misses([t["cpu"] for t in targets]),
                "stability": float(np.mean(stab)) if stab else None,
                "wall_per_run": float(np.mean([r["seconds"] for r in sel])),
                "cpu_per_run": float(np.mean([r["cpu_seconds"] for r in sel])),
                "eval_share": float(np.mean([r["eval_wall"] / max(r["seconds"], 1e-9) for r in sel])),
            }
        out[name] = {"reference": ref, "methods": cells, "acceptance": acceptance(cells)}
    return out


#: the FederatedPPO rows with a drift correction, compared with the row without one (``fedppo``)
CORRECTED_FEDPPO = ("fedppo_corr", "fedppo_surr", "fedppo_snr")


def default_fedppo_row() -> str:
    """:return: the FederatedPPO row that runs the library's defaults (its correction and noise control)"""
    from sb3_fedpg import FederatedPPO

    defaults = _constructor_defaults(FederatedPPO)
    for method in ("fedppo", *CORRECTED_FEDPPO):
        fixed = METHODS[method].fixed
        if all(fixed.get(k, defaults[k]) == defaults[k] for k in ("correction", "variance_control", "normalize_advantage")):
            return method
    raise ValueError("no FederatedPPO row of METHODS runs the library's default correction")


#: the seeds a row needs before a verdict uses it (all of them when the study has fewer): a sweep extended to more
#: seeds is reported as it fills in, every row over the seeds it has
MIN_SEEDS = 3


def _ready(cell: dict[str, Any] | None) -> bool:
    """:return: whether a row has enough seeds for a verdict (:data:`MIN_SEEDS`, or all of a smaller study's)"""
    return bool(cell) and cell["complete"] >= min(MIN_SEEDS, cell["of"])


def correction_verdict(cells: dict[str, Any], method: str) -> str | None:
    """
    :return: a corrected FederatedPPO row's final J against the uncorrected row's, beyond the seed spread or not
        (mean − std > mean + std: ``better``; the reverse: ``worse``; else ``level``); ``None`` while incomplete
    """
    a, b = cells.get(method), cells.get("fedppo")
    if not _ready(a) or not _ready(b):
        return None
    if a["mean"] - a["std"] > b["mean"] + b["std"]:
        return "better"
    if a["mean"] + a["std"] < b["mean"] - b["std"]:
        return "worse"
    return "level"


def acceptance(cells: dict[str, Any]) -> dict[str, Any]:
    """
    FederatedPPO's best variant (fewer median steps to the target) against central SB3 PPO on one family: the
    central PPO row that gets there first where a family has more than one (``CENTRAL_PPO``).
    """
    inf = float("inf")

    def key(m: str) -> tuple[float, float]:
        c = cells[m]
        return (c["steps_to_target"] or inf, -c["mean"])

    variants = [m for m in ("fedppo", "fedppo_corr", "fedppo_surr", "fedppo_snr") if cells.get(m, {}).get("complete")]
    central = [m for m in CENTRAL_PPO if m in cells]
    if not variants or not central or not all(cells[m]["complete"] for m in central):
        return {"best_fedppo": None, "ppo": None, "steps_ok": None, "wall_ok": None}
    best, ppo = min(variants, key=key), min(central, key=key)
    steps, wall = cells[best]["steps_to_target"], cells[best]["wall_to_target"]
    steps_ok = steps is not None and steps <= (cells[ppo]["steps_to_target"] or inf)
    wall_ok = wall is not None and wall < (cells[ppo]["wall_to_target"] or inf)
    return {"best_fedppo": best, "ppo": ppo, "steps_ok": bool(steps_ok), "wall_ok": bool(wall_ok)}


def default_acceptance(cells: dict[str, Any]) -> dict[str, bool | None]:
    """The library's default FederatedPPO against the agent-aware central PPO (the issue's headline rival)."""
    inf = float("inf")
    fed, central = cells.get(default_fedppo_row()), cells.get("ppo_agent")
    if not _ready(fed) or not _ready(central):
        return {"steps_ok": None, "wall_ok": None}
    steps, wall = fed["steps_to_target"], fed["wall_to_target"]
    return {
        "steps_ok": steps is not None and steps <= (central["steps_to_target"] or inf),
        "wall_ok": wall is not None and wall < (central["wall_to_target"] or inf),
    }


def _num(value: float | None, fmt: str, missing: str = "—") -> str:
    return missing if value is None else format(value, fmt)


def markdown(
    summary: dict[str, Any],
    families: dict[str, dict[str, Any]],
    seeds: list[int],
    compute: dict[str, Any],
    machine: dict[str, Any],
) -> str:
    lines = [
        "| family | method | runs | final J (mean ± std) | score | steps to 90 % (reached) | wall-clock to 90 % "
        "| CPU to 90 % | stability after | wall / run | CPU / run | eval share |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, cell in summary.items():
        for method, c in cell["methods"].items():
            label = LABELS[method]
            if not c["complete"]:
                lines.append(f"| {name} | {label} | 0/{c['of']} | pending | | | | | | | | |")
                continue
            lqr = "optimal" in cell["reference"]
            digits = 3 if lqr else 1
            steps = _num(c["steps_to_target"], ",.0f", "not reached" if not c["reached"] else "—")
            wall, cpu = (
                _num(c[k], ".0f", "—") + (" s" if c[k] is not None else "") for k in ("wall_to_target", "cpu_to_target")
            )
            lines.append(
                f"| {name} | {label} | {c['complete']}/{c['of']} | {c['mean']:.{digits}f} ± {c['std']:.{digits}f} "
                f"| {c['score']:.0%} | {steps} ({c['reached']}/{c['complete']}) "
                f"| {wall} | {cpu} | {_num(c['stability'], '.0%')} "
                f"| {c['wall_per_run'] / 60:.1f} min | {c['cpu_per_run'] / 60:.1f} min | {c['eval_share']:.0%} |"
            )
    lines += [
        "",
        "| family | J_best (method) | J random | J zero action | FederatedPPO's best variant | central PPO (first to 90 %) "
        "| steps to 90 % ≤ PPO's? | wall-clock to 90 % < PPO's? |",
        "|---|---:|---:|---:|---|---|---|---|",
    ]
    yes_no = {True: "**yes**", False: "no", None: "pending"}
    for name, cell in summary.items():
        ref, acc = cell["reference"], cell["acceptance"]
        best = f"{ref['best']:.1f} ({LABELS.get(ref['best_method'], ref['best_method'])})"
        variant = LABELS[acc["best_fedppo"]] if acc["best_fedppo"] else "pending"
        central = LABELS[acc["ppo"]] if acc.get("ppo") else "pending"
        lines.append(
            f"| {name} | {best} | {_num(ref['random'], '.1f')} | {_num(ref['zero'], '.1f')} | {variant} | {central} "
            f"| {yes_no[acc['steps_ok']]} | {yes_no[acc['wall_ok']]} |"
        )
    missing = [n for n in families if n not in summary]
    steps_ok = [n for n, c in summary.items() if c["acceptance"]["steps_ok"]]
    wall_all = [n for n, c in summary.items() if c["acceptance"]["wall_ok"] is not None]
    wall_ok = [n for n in wall_all if summary[n]["acceptance"]["wall_ok"]]
    for name, cell in summary.items():
        ref = cell["reference"]
        if ref.get("shared_bound") is not None and ref.get("zero") is not None:
            bound, zero, best = ref["shared_bound"], ref["zero"], ref["best"]
            lines += [
                "",
                f"{name}: no policy shared by the agents can get above J = {bound:.1f} (they see the same states, "
                "so their cheetahs run the same speeds; the speed that is best for all is the median target; control "
                f"costs and the start from rest lower it further). The best final J, {best:.1f} "
                f"({LABELS.get(ref['best_method'], ref['best_method'])}), is {(best - zero) / (bound - zero):.0%} "
                f"of the way from standing still ({zero:.1f}) to that bound.",
            ]
    lines += [
        "",
        "The drift corrections against FederatedPPO without one (final J, beyond the seed spread: mean − std vs mean + "
        f"std). The library's default is the row `{default_fedppo_row()}`.",
        "",
        "| family | " + " | ".join(LABELS[m] for m in CORRECTED_FEDPPO) + " |",
        "|---|" + "---|" * len(CORRECTED_FEDPPO),
    ]
    for name, cell in summary.items():
        verdicts = [correction_verdict(cell["methods"], m) or "pending" for m in CORRECTED_FEDPPO]
        lines.append(f"| {name} | " + " | ".join(f"**{v}**" if v == "worse" else v for v in verdicts) + " |")
    lines += [
        "",
        f"Acceptance so far: FederatedPPO (best variant) reaches 90 % of the best J in no more env steps than central "
        f"SB3 PPO on {len(steps_ok)} of {len(summary)} families with runs ({', '.join(steps_ok) or 'none'}; target ≥ 3); "
        f"in less wall-clock on {len(wall_ok)} of {len(wall_all)} ({', '.join(wall_ok) or 'none'}; target: all).",
    ]
    default = {n: default_acceptance(c["methods"]) for n, c in summary.items()}
    d_steps = [n for n, a in default.items() if a["steps_ok"]]
    d_all = [n for n, a in default.items() if a["wall_ok"] is not None]
    d_wall = [n for n in d_all if default[n]["wall_ok"]]
    lines += [
        f"The library's default FederatedPPO (`{default_fedppo_row()}`) against the agent-aware central PPO: 90 % of the "
        f"best J in no more env steps on {len(d_steps)} of {len(d_all)} families with both complete "
        f"({', '.join(d_steps) or 'none'}; target: at least half), in less wall-clock on {len(d_wall)} of {len(d_all)} "
        f"({', '.join(d_wall) or 'none'}; target: all).",
        "",
        "J: mean over agents of each agent's return under its own reward (stochastic policy; LQR: exact −C̄(K) of the "
        "deterministic gain), final value at the budget, mean ± std over seeds. Score: (J − J_random) / (J_best − J_random) "
        "with J_best the best seed-mean final J of any method (LQR: C̄*/C̄(K), the exact optimum). Steps and wall-clock "
        "to 90 %: first evaluation with score ≥ 0.9, median over seeds counting a miss as never (— when most seeds "
        "missed); wall-clock (and CPU) is the run's training time up to that evaluation, evaluations excluded, measured "
        "in one worker process with methods interleaved seed by seed; on this shared machine wall-clock swings with the "
        "other jobs' load, CPU time much less. Stability: fraction of the later evaluations (final one "
        "included) still at score ≥ 0.9, mean over the seeds that reached it. Eval share: evaluation time / run time. "
        "local-only PPO: N models, each on its own agent's env with budget / N steps; its curve is the mean of the "
        "models' global objectives, its time the sum of theirs.",
        "",
        f"Runs complete: {compute['complete']} of {compute['planned']} ({len(seeds)} seeds). Compute so far: "
        f"{compute['wall_hours']:.2f} h wall-clock, {compute['cpu_hours']:.2f} h CPU, of which evaluation "
        f"{compute['eval_share']:.0%} (one worker process, one torch thread, {machine.get('machine')} with "
        f"{machine.get('cpus')} cores shared with other jobs)."
        + (
            f" Estimated remaining (pilot runs extrapolated): {compute['remaining_hours']:.1f} h CPU."
            if compute.get("remaining_hours") is not None
            else ""
        ),
    ]
    heavy = [
        f"{name} {LABELS[m]} ({c['eval_share']:.0%})"
        for name, cell in summary.items()
        for m, c in cell["methods"].items()
        if c["complete"] and c["eval_share"] > 0.1
    ]
    if heavy:
        lines.append(
            f"Evaluation above 10 % of the run: {', '.join(heavy)}: these runs train in seconds to a few minutes of CPU, "
            "while their evaluations, at the same env steps as every other method's, cost about as much as anyone's."
        )
    if missing:
        lines.append(f"Families with no completed run yet: {', '.join(missing)}.")
    for f in compute.get("failed", []):
        lines.append(f"Failed (not in the table): {f['family']} {LABELS[f['method']]} seed {f['seed']}: {f['error']}.")
    return "\n".join(lines) + "\n"


def hyperparams_markdown(families: dict[str, dict[str, Any]]) -> str:
    """The budgets and every algorithm's hyperparameters per family (``ppo_comparison_hyperparams.md``)."""
    lines = [
        "Budgets and hyperparameters (the zoo_configs entry of each algorithm for the env, with the benchmark's "
        "overrides; FedAvg-PG and FederatedPPO ± correction differ from their algorithm's row only in `correction`; "
        "local-only PPO uses the PPO row with n_envs / N envs per model; `ppo (ppo_zoo)`: a second central PPO, with "
        "rl-zoo's tuned optimisation for the env; `ppo (ppo_noclip)`: the PPO row without gradient clipping; other "
        "arguments at the library defaults):",
        "",
        "| family | budget (total env steps) | N | evaluations (eval envs per agent, final episodes each) | algorithm "
        "| hyperparameters |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, family in families.items():
        for method in ("fedpg", "fedppo", "fedsvrpgm", "ppo", "a2c", *family.get("extra_methods", ())):
            _, entry = nr.algo_hyperparams(family, method, HETEROGENEITY, METHODS)
            shown = {k: v for k, v in entry.items() if k not in ("n_timesteps", "policy", "env_kwargs", "correction")}
            lines.append(
                f"| {name} | {family['budget']:,} | {family['n_agents']} | {family['n_evals']} "
                f"({family['eval_envs_per_agent']}, {family['final_episodes_per_env']}) | {_algo_label(method)} "
                f"| `{json.dumps(shown, default=str)}` |"
            )
    return "\n".join(lines) + "\n"


def _algo_label(method: str) -> str:
    """:return: the hyperparameter table's name of a method's row (its algorithm, or the method where they differ)"""
    algo = METHODS[method].algo
    return algo if method in ("fedpg", "fedppo", "fedsvrpgm", "ppo", "a2c") else f"{algo} ({method})"


def plot(runs: list[dict[str, Any]], summary: dict[str, Any]) -> Any:
    """One row per family: the score vs total env steps and vs training wall-clock, mean ± std over seeds."""
    import matplotlib.pyplot as plt

    from sb3_fedpg.common.plotting import Series, aggregate_curves, draw_panel

    names = list(summary)
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 3.4 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        ax_s, ax_w = axes[row]
        ref = summary[name]["reference"]
        series = []
        for method in METHODS:
            sel = [r for r in runs if r["family"] == name and r["method"] == method]
            if not sel:
                continue
            grid = sel[0]["timesteps"]  # every seed on the first seed's grid
            score = aggregate_curves([(r["timesteps"], score_of(r["global_return"], ref)) for r in sel], grid=grid)
            walls = aggregate_curves([(r["timesteps"], r["wall"]) for r in sel], grid=grid).mean
            label = f"{LABELS[method]} ({len(sel)})"
            series.append(Series(label, score, COLORS[method]))
            # a log axis from 1 s (the first points are the untrained policy, at ~0 s); from 1 % of the run when
            # a whole run is shorter (the --quick smoke runs on an idle machine)
            keep = (walls > 0) & (walls >= min(1.0, walls.max() / 100))
            ax_w.plot(walls[keep], score.mean[keep], color=COLORS[method], label=label)
        for ax in (ax_s, ax_w):
            ax.axhline(TARGET, color="k", ls=":", lw=1)
        title = f"{name}: score vs env steps (all agents)"
        draw_panel(ax_s, series, title, "score (1 = best J)", xlabel="", fontsize=9, legend=None)
        ax_s.legend(fontsize=7, loc="lower right")
        ax_w.set_xscale("log")
        ax_w.set_title(f"{name}: score vs training wall-clock (s, evaluations excluded)", fontsize=9)
        ax_w.grid(alpha=0.3)
        for ax in (ax_s, ax_w):
            ax.set_ylim(-0.2, 1.15)
            ax.tick_params(labelsize=8)
    return fig


# ------------------------------------------------------------------------------ report
def report(ctx: Context) -> Report:
    """``ppo_comparison.{json,md,png}`` and ``ppo_comparison_hyperparams.md`` from the runs."""
    s, machine, families = ctx.settings, ctx.sweep.machine, families_of(ctx.settings)
    records = [ctx.results[r] for r in family_runs(s)]
    refs = {name: [ctx.results[reference_run(name, f, seed)] for seed in s.seeds] for name, f in families.items()}
    summary = summarize(records, families, refs, s.seeds)
    cpu = sum(r["cpu_seconds"] for r in records)
    # every run is in (the harness reports nothing else): nothing failed, missing or left to estimate
    compute = {"failed": [], "complete": len(records), "planned": len(records)}
    compute |= {"wall_hours": sum(r["seconds"] for r in records) / 3600, "cpu_hours": cpu / 3600}
    compute |= {"eval_share": sum(r["eval_cpu"] for r in records) / max(cpu, 1e-9), "remaining_hours": 0.0, "missing": []}
    payload = {"families": families, "methods": {m: spec._asdict() for m, spec in METHODS.items()}}
    payload |= {"heterogeneity": HETEROGENEITY, "seeds": s.seeds, "target": TARGET, "compute": compute}
    payload |= {"summary": summary, "machine": {k: machine.get(k) for k in ("platform", "python", "cpus")}, "runs": records}
    text = markdown(summary, families, s.seeds, compute, machine)
    extra = {"ppo_comparison_hyperparams.md": hyperparams_markdown(families)}
    return Report(payload, plot(records, summary), text, dpi=90, extra_markdown=extra)


STUDY = Study(
    "ppo_comparison",
    __doc__,
    dict(families=list(FAMILIES), methods=list(METHODS), seeds=[0, 1, 2], scale="full"),
    runs,
    report,
    quick=dict(families=list(QUICK_FAMILIES), seeds=[0, 1], scale="quick"),
)
main = STUDY.main

if __name__ == "__main__":
    main()
