import numpy as np
import torch as th

from sb3_fedpg.common.estimators import alive_mask, gae_advantages, gpomdp_weights, reinforce_weights


def test_alive_mask_stops_after_first_done():
    dones = th.tensor([[[0.0], [1.0], [0.0], [1.0]]])
    np.testing.assert_array_equal(alive_mask(dones)[0, :, 0].numpy(), [1, 1, 0, 0])


def test_gpomdp_weights_are_discounted_rewards_to_go():
    rewards = th.tensor([[[1.0], [2.0], [3.0]]])
    dones = th.zeros_like(rewards)
    w = gpomdp_weights(rewards, dones, gamma=0.5)[0, :, 0]
    # w_h = Σ_{k>=h} γ^k r_k (discounted from the trajectory start, as in the paper)
    np.testing.assert_allclose(w.numpy(), [1 + 0.5 * 2 + 0.25 * 3, 0.5 * 2 + 0.25 * 3, 0.25 * 3])
    r = reinforce_weights(rewards, dones, gamma=0.5)[0, :, 0]
    np.testing.assert_allclose(r.numpy(), [2.75, 2.75, 2.75])


def test_mean_baseline_centres_each_step():
    rewards = th.rand(2, 4, 5)
    w = gpomdp_weights(rewards, th.zeros_like(rewards), gamma=0.9, baseline="mean")
    np.testing.assert_allclose(w.mean(dim=2).numpy(), 0.0, atol=1e-6)


def test_gae_matches_reference_recursion():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 3))
    d = (rng.random((2, 6, 3)) < 0.3).astype(float)
    last = rng.normal(size=(2, 3))
    gamma, lam = 0.9, 0.8
    expected = np.zeros_like(r)
    for a in range(2):
        for m in range(3):
            adv = 0.0
            for k in reversed(range(6)):
                nxt = last[a, m] if k == 5 else v[a, k + 1, m]
                nd = 1 - d[a, k, m]
                delta = r[a, k, m] + gamma * nxt * nd - v[a, k, m]
                adv = delta + gamma * lam * nd * adv
                expected[a, k, m] = adv
    t = lambda x: th.as_tensor(x, dtype=th.float64)
    np.testing.assert_allclose(gae_advantages(t(r), t(v), t(d), t(last), gamma, lam).numpy(), expected, atol=1e-12)
