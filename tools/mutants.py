"""
Mutation check: break the math on purpose and show which fast test catches it.

Each mutant replaces one exact piece of source text. The script copies the committed tree (``git
archive HEAD``) into a temporary folder, applies one mutant at a time there (the working tree is never
touched), runs the fast tests named for it and records which fail. A mutant no test catches is a
hole in the tests. Writes ``docs/benchmarks/mutation.md`` (the table) and ``benchmarks/results/mutation.json``.

    python tools/mutants.py            # all mutants (~5 min on 2 cores)
    python tools/mutants.py --only pg_sign
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import time

from sb3_fedpg.common.cli import ArgumentParser

ROOT = pathlib.Path(__file__).resolve().parents[1]

FAST = ["tests/common/test_fedmath.py", "tests/common/test_estimators.py", "tests/common/test_sampling.py"]
ESTIMATES = ["tests/fedpg/test_gradient_estimates.py"]
WIRING = ["tests/fedpg/test_fedpg.py::test_in_process_round_wires_the_correction_and_the_anchor_reuse"]
WIRING += ["tests/fedpg/test_fedpg.py::test_a_round_costs_H_batches_with_anchor_reuse_and_H_plus_1_without"]
PPO_EPOCHS = ["tests/ppo/test_local_solver.py"]
SURROGATE = ["tests/ppo/test_surrogate_correction.py"]
OBJECTIVE = ["tests/common/test_average_return_objective.py"]
METRICS = ["tests/common/test_fed_metrics.py"]
SVRPGM = ["tests/tabular/test_svrpgm.py", "tests/svrpgm/test_svrpgm.py", "tests/common/test_momentum_math.py"]

#: name → (what it breaks, file, original text, mutated text, tests to run)
MUTANTS: dict[str, tuple[str, str, str, str, list[str]]] = {
    "pg_sign": (
        "the policy gradient's sign (descent instead of ascent)",
        "sb3_fedpg/fedpg/learner.py",
        "objective = surrogate + ent_coef * entropy",
        "objective = -surrogate + ent_coef * entropy",
        ESTIMATES + FAST,
    ),
    "sample_discrete_numpy": (
        "NumPy rollout samples Discrete actions from a wrong law (Gumbel noise with the wrong sign)",
        "sb3_fedpg/common/batched_policy.py",
        "(out - np.log(rng.exponential(size=out.shape))).argmax(axis=-1)",
        "(out + np.log(rng.exponential(size=out.shape))).argmax(axis=-1)",
        FAST,
    ),
    "sample_discrete_torch": (
        "torch rollout samples Discrete actions from a wrong law (Gumbel noise with the wrong sign)",
        "sb3_fedpg/common/batched_policy.py",
        "gumbel = -th.empty_like(out).exponential_().log()",
        "gumbel = th.empty_like(out).exponential_().log()",
        FAST,
    ),
    "sample_box_numpy": (
        "NumPy rollout samples Box actions with the wrong scale (σ² instead of σ)",
        "sb3_fedpg/common/batched_policy.py",
        "np.exp(params[:, None, self.log_std])",
        "np.exp(2 * params[:, None, self.log_std])",
        FAST,
    ),
    "sample_box_torch": (
        "torch rollout samples Box actions from a wrong law (uniform instead of Gaussian noise)",
        "sb3_fedpg/common/batched_policy.py",
        "params[:, self.log_std].exp().unsqueeze(1) * th.randn_like(out)",
        "params[:, self.log_std].exp().unsqueeze(1) * th.rand_like(out)",
        FAST,
    ),
    "log_prob_scale": (
        "the batched Gaussian's log-probability uses the wrong std (gradients of the wrong law)",
        "sb3_fedpg/common/batched_policy.py",
        "th.distributions.Normal(out, std, validate_args=False)",
        "th.distributions.Normal(out, 2 * std, validate_args=False)",
        FAST + ESTIMATES,
    ),
    "correction_sign": (
        "the correction's sign (ĝ + a_i − g)",
        "sb3_fedpg/common/fedmath.py",
        "return local_grads - anchor_grads + global_grad",
        "return local_grads + anchor_grads - global_grad",
        FAST + WIRING,
    ),
    "correction_ignored_in_process": (
        "FederatedPG passes the correction flag inverted",
        "sb3_fedpg/fedpg/fedpg.py",
        "            correction=self.correction,\n",
        "            correction=not self.correction,\n",
        WIRING + ESTIMATES,
    ),
    "aggregator_drops_agent": (
        "the mean aggregator drops one agent",
        "sb3_fedpg/common/fedmath.py",
        "    return stacked.mean(0)\n",
        "    return stacked[1:].mean(0)\n",
        FAST,
    ),
    "flower_server_drops_agent": (
        "the Flower server averages all phase-2 replies but one",
        "sb3_fedpg/flower/server_app.py",
        'out["local_params"] = params + np.stack([deltas[n] for n in accepted])',
        'out["local_params"] = params + np.stack([deltas[n] for n in accepted[1:]])',
        ["tests/flower/test_simulation.py::test_simulation_matches_in_process_exact_run"],
    ),
    "gae_lambda_ignored": (
        "GAE's λ ignored (λ = 1)",
        "sb3_fedpg/common/estimators.py",
        "next_adv = delta + gamma * gae_lambda * not_done * next_adv",
        "next_adv = delta + gamma * not_done * next_adv",
        FAST,
    ),
    "critic_never_updated": (
        "the local critics never take a step",
        "sb3_fedpg/fedpg/learner.py",
        "        self.critic_optimizer.step()\n",
        "        pass\n",
        ESTIMATES,
    ),
    "anchor_not_reused": (
        "the anchor batch not reused for the first local step when it should be (shared round)",
        "sb3_fedpg/common/fedmath.py",
        "local_grads = anchor_grads if (step == 0 and reuse_anchor) else grad_fn(params, step)",
        "local_grads = grad_fn(params, step)",
        FAST + WIRING,
    ),
    "anchor_not_reused_neural": (
        "the anchor batch not reused for the first local step when it should be (neural solver)",
        "sb3_fedpg/fedpg/learner.py",
        "if step == 0 and self.reuse_anchor:",
        "if False:",
        WIRING,
    ),
    "server_lr_ignored": (
        "the server step size η_g ignored",
        "sb3_fedpg/common/fedmath.py",
        "return global_params + server_learning_rate * change",
        "return global_params + change",
        FAST,
    ),
    "ppo_clip_mask_dropped": (
        "FederatedPPO's clipped surrogate differentiated as if never clipped",
        "sb3_fedpg/ppo/local_solver.py",
        "grad_log_prob = (adv * (unclipped <= clipped))",
        "grad_log_prob = (adv * (unclipped == unclipped))",
        PPO_EPOCHS,
    ),
    "ppo_tanh_derivative_dropped": (
        "the hand-written batched backward skips tanh's derivative",
        "sb3_fedpg/common/batched_policy.py",
        "return th.ops.aten.tanh_backward(grad, y)",
        "return grad",
        PPO_EPOCHS,
    ),
    "ppo_log_std_gradient": (
        "the hand-written Gaussian log-std gradient misses the −1 of z² − 1",
        "sb3_fedpg/common/batched_policy.py",
        "(g_z * cache.z - g).sum(1)",
        "(g_z * cache.z).sum(1)",
        PPO_EPOCHS,
    ),
    "auto_anchor_batches_h_div_5": (
        "anchor_batches='auto' back to the H // 5 rule (10 instead of 25 batches at H = 50)",
        "sb3_fedpg/common/hyperparams.py",
        "return min(local_steps, max(1, (local_steps * local_steps + 50) // 100))",
        "return max(1, local_steps // 5)",
        ["tests/fedpg/test_noise_aware.py"],
    ),
    "ppo_target_kl_threshold": (
        "FederatedPPO's KL early stop at 2.5 × target_kl instead of SB3's 1.5 ×",
        "sb3_fedpg/ppo/local_solver.py",
        "active &= kl <= 1.5 * s.target_kl",
        "active &= kl <= 2.5 * s.target_kl",
        PPO_EPOCHS,
    ),
    "flower_ppo_rollout_not_kept": (
        "a Flower FederatedPPO agent forgets its phase-1 rollout when its memory travels in context.state",
        "sb3_fedpg/flower/agent.py",
        'memory: dict[str, Any] = {"local": self.model.local_state_dict(), "round": self._round_memory}',
        'memory: dict[str, Any] = {"local": self.model.local_state_dict(), "round": {}}',
        ["tests/flower/test_agent_memory.py"],
    ),
    "surrogate_shift_sign": (
        "FederatedPPO's surrogate correction subtracts its advantage shift instead of adding it",
        "sb3_fedpg/ppo/local_solver.py",
        'adv = adv + data["shift"][rows, order]',
        'adv = adv - data["shift"][rows, order]',
        SURROGATE,
    ),
    "surrogate_shift_dropped": (
        "FederatedPPO's surrogate correction computed but never added to the advantages",
        "sb3_fedpg/ppo/local_solver.py",
        'adv = adv + data["shift"][rows, order]',
        'adv = adv + 0 * data["shift"][rows, order]',
        SURROGATE,
    ),
    "surrogate_no_fisher_solve": (
        "FederatedPPO's surrogate shift from g − a_i itself instead of the Fisher solve's x_i",
        "sb3_fedpg/ppo/local_solver.py",
        "        shift = jvp(x)\n",
        "        shift = jvp(correction)\n",
        SURROGATE,
    ),
    "shared_scale_ignored": (
        "shared normalisation: the server's scale never divides the anchors' policy parts",
        "sb3_fedpg/common/fedmath.py",
        "        anchors = self.policy / (scale + 1e-8)\n",
        "        anchors = self.policy\n",
        OBJECTIVE,
    ),
    "shared_ratio_one": (
        "shared normalisation: local batches lose their agent's scale (ρ_i = 1: per-agent normalisation)",
        "sb3_fedpg/common/fedmath.py",
        "    return own / (scale + 1e-8)\n",
        "    return own * 0 + 1\n",
        OBJECTIVE,
    ),
    "shared_anchor_own_scale": (
        "shared normalisation: FederatedPG's anchor batches divided by their own standard deviation before sending",
        "sb3_fedpg/fedpg/learner.py",
        "normalized = fedmath.normalized_advantages(weights.weights, (1, 2), weights.valid, centre_only and shared)",
        "normalized = fedmath.normalized_advantages(weights.weights, (1, 2), weights.valid, False)",
        OBJECTIVE,
    ),
    "ppo_snr_damping_ignored": (
        "FederatedPPO's snr_damping measures β but applies the undamped correction",
        "sb3_fedpg/ppo/local_solver.py",
        "difference = difference * self.snr_damping(anchor_grads, global_grad).unsqueeze(1)",
        "difference = difference * self.snr_damping(anchor_grads, global_grad).unsqueeze(1) ** 0",
        SURROGATE,
    ),
    "metric_snr_without_correction_inf": (
        "a correction with neither signal nor noise (one agent) read as all signal (SNR inf, β = 1)",
        "sb3_fedpg/common/fedmath.py",
        'noiseless = th.where(clipped > 0, th.full_like(noise, float("inf")), th.zeros_like(noise))',
        'noiseless = th.full_like(noise, float("inf"))',
        METRICS,
    ),
    "metric_return_pooled": (
        "rollout/ep_rew_mean pooled over episodes instead of J̄ (agents weighted by how often their episodes end)",
        "sb3_fedpg/common/federated_algorithm.py",
        'self.logger.record("rollout/ep_rew_mean", float(np.mean(agent_means)))',
        'self.logger.record("rollout/ep_rew_mean", safe_mean([ep["r"] for ep in self.ep_info_buffer]))',
        METRICS,
    ),
    "svrpgm_weight_flipped": (
        "FedSVRPG-M's importance weight inverted (1/w = p(τ; θ_{i,k}) / p(τ; θ̄_{r−1}))",
        "sb3_fedpg/common/fedmath.py",
        "log_ratio = log_prob_target - log_prob_behaviour",
        "log_ratio = log_prob_behaviour - log_prob_target",
        SVRPGM,
    ),
    "svrpgm_weight_one_numpy": (
        "FedSVRPG-M's importance weight dropped (w = 1) in the tabular runs",
        "sb3_fedpg/common/fedmath.py",
        "weights = np.exp(log_ratio.sum(axis=time_axis))",
        "weights = np.exp(0 * log_ratio.sum(axis=time_axis))",
        SVRPGM,
    ),
    "svrpgm_weight_one_torch": (
        "FedSVRPG-M's importance weight dropped (w = 1) in the neural algorithm",
        "sb3_fedpg/common/fedmath.py",
        "tensor = th.exp(log_ratio.sum(dim=time_axis))",
        "tensor = th.exp(0 * log_ratio.sum(dim=time_axis))",
        SVRPGM,
    ),
    "svrpgm_no_momentum": (
        "FedSVRPG-M's momentum dropped (u_{i,k} = ĝ_i(θ_{i,k}): FedAvg-PG)",
        "sb3_fedpg/common/fedmath.py",
        "return local_grads + (1 - momentum_coef) * (momentum - weighted_grads_at_previous)",
        "return local_grads",
        SVRPGM,
    ),
    "svrpgm_reference_current": (
        "FedSVRPG-M's correction evaluated at θ̄_r instead of θ̄_{r−1} (neural solver)",
        "sb3_fedpg/svrpgm/local_solver.py",
        "global_params if first else self.memory.previous_params",
        "global_params",
        SVRPGM,
    ),
    "svrpgm_server_momentum_scale": (
        "FedSVRPG-M's server momentum not divided by η (u_{r+1} = mean Δ / H)",
        "sb3_fedpg/common/fedmath.py",
        'return checked_aggregate(aggregator, changes, "parameter changes") / (learning_rate * local_steps)',
        'return checked_aggregate(aggregator, changes, "parameter changes") / local_steps',
        SVRPGM,
    ),
}


def run_mutant(tree: pathlib.Path, name: str) -> dict:
    what, rel, old, new, tests = MUTANTS[name]
    path = tree / rel
    source = path.read_text()
    if source.count(old) != 1:
        raise SystemExit(f"mutant {name}: the original text occurs {source.count(old)} times in {rel} (expected once)")
    path.write_text(source.replace(old, new))
    report = tree / f"report-{name}.json"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", f"--junitxml={report}", *tests]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    path.write_text(source)
    failed = [line.split(" ")[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    return {"mutant": name, "breaks": what, "file": rel, "caught": proc.returncode != 0, "failed": failed, "seconds": seconds}


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="mutant names")
    args = parser.parse_args()
    names = args.only or list(MUTANTS)
    with tempfile.TemporaryDirectory() as tmp:
        tree = pathlib.Path(tmp) / "tree"
        tree.mkdir()
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
        tar_path = pathlib.Path(tmp) / "head.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tree, filter="data")
        (tree / "sb3_fedpg" / "envs").symlink_to("../envs")  # the installed mapping sb3_fedpg.envs -> envs/
        rows = []
        for name in names:
            row = run_mutant(tree, name)
            print(f"{name}: {'caught by ' + ', '.join(row['failed']) if row['caught'] else 'NOT CAUGHT'}", flush=True)
            rows.append(row)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    previous = results / "mutation.json"
    if args.only and previous.exists():  # --only replaces its own rows; the others stay from their last run
        fresh = {row["mutant"]: row for row in rows}
        old = {row["mutant"]: row for row in json.loads(previous.read_text())}
        rows = [fresh.get(name) or old[name] for name in MUTANTS if name in fresh or name in old]
    previous.write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# Mutation check",
        "",
        "Generated by `python tools/mutants.py` from the committed tree: each mutant breaks one piece of math on",
        "purpose, the named fast tests run (`pytest -x`, so the first failure is shown), and the table says which caught it.",
        "`--only NAME ...` re-runs some mutants and replaces their rows; the other rows are from their last run.",
        "",
        "| mutant | what it breaks | file | caught by (first failing test) | s |",
        "|---|---|---|---|---:|",
    ]
    for row in rows:
        caught = f"`{row['failed'][0]}`" if row["failed"] else ("**not caught**" if not row["caught"] else "(error)")
        lines.append(f"| `{row['mutant']}` | {row['breaks']} | `{row['file']}` | {caught} | {row['seconds']:.0f} |")
    (ROOT / "docs" / "benchmarks" / "mutation.md").write_text("\n".join(lines) + "\n")
    if not all(row["caught"] for row in rows):
        raise SystemExit("some mutants were not caught")


if __name__ == "__main__":
    main()
