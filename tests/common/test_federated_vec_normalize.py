"""Federated observation normalisation: per-agent statistics merged exactly (pooled RunningMeanStd) at every round."""

import numpy as np
import pytest
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

from sb3_fedpg import FederatedPG, FederatedPPO, FederatedSVRPGM, make_federated_vec_env
from sb3_fedpg.common import fedmath
from sb3_fedpg.common.vec_normalize import FederatedVecNormalize, rms_moments

POINT_MASS = "sb3_fedpg/HeteroPointMass-v0"
TOL = 1e-10


class RecordObservations(VecEnvWrapper):
    """Below the normaliser: every raw observation of ``reset`` and ``step`` (those SB3's VecNormalize learns from)."""

    def __init__(self, venv):
        super().__init__(venv)
        self.seen = []

    def reset(self):
        obs = self.venv.reset()
        self.seen.append(obs.copy())
        return obs

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.seen.append(obs.copy())
        return obs, rewards, dones, infos


def pooled(batches, shape):
    rms = RunningMeanStd(shape=shape)  # SB3's prior (count 1e-4, mean 0, var 1), as the global statistics start
    for batch in batches:
        rms.update(np.asarray(batch, np.float64))
    return rms


def assert_same_statistics(rms, reference):
    assert rms.count == pytest.approx(reference.count, rel=0, abs=TOL)
    np.testing.assert_allclose(rms.mean, reference.mean, rtol=0, atol=TOL)
    np.testing.assert_allclose(rms.var, reference.var, rtol=0, atol=TOL)


def test_merge_running_moments_is_the_statistics_of_the_union():
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc=i, scale=1 + i, size=(n, 3)) for i, n in enumerate([5, 40, 1, 17])]
    merged = fedmath.merge_running_moments(
        [(len(p), p.mean(0), ((p - p.mean(0)) ** 2).sum(0)) for p in parts] + [(0.0, np.zeros(3), np.zeros(3))]
    )
    data = np.concatenate(parts)
    assert merged[0] == len(data)
    np.testing.assert_allclose(merged[1], data.mean(0), rtol=0, atol=TOL)
    np.testing.assert_allclose(merged[2] / merged[0], data.var(0), rtol=0, atol=TOL)
    with pytest.raises(ValueError, match="cannot be merged"):
        fedmath.merge_running_moments([(1.0, np.zeros(3), np.zeros(3)), (1.0, np.zeros(2), np.zeros(2))])


def test_merge_weights_by_count_and_keeps_every_agent():
    # Agents with very different amounts of data: the merge must equal the pooled statistics, which neither an
    # unweighted average of the agents' means nor a merge that drops an agent comes close to.
    env = make_federated_vec_env(POINT_MASS, n_agents=3, n_envs_per_agent=1, seed=0)
    wrapper = FederatedVecNormalize(env)
    rng = np.random.default_rng(1)
    data = [rng.normal(loc=3 * i, size=(n, 4)) for i, n in enumerate([2, 50, 7])]
    for i, block in enumerate(data):
        wrapper.obs_deltas[i].update(block)
    wrapper.merge()
    reference = pooled(data, (4,))
    assert_same_statistics(wrapper.obs_rms, reference)
    for i in range(3):  # every agent continues from the merged statistics, with an empty delta
        assert_same_statistics(wrapper.agent_obs_rms[i], reference)
        assert wrapper.obs_deltas[i].count == 0
    unweighted = np.mean([block.mean(0) for block in data], axis=0)
    assert np.abs(unweighted - reference.mean).max() > 0.1
    dropped = pooled([data[0], data[2]], (4,))
    assert np.abs(dropped.mean - reference.mean).max() > 0.1
    env.close()


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO, FederatedSVRPGM])
def test_training_merges_to_the_pooled_statistics(algo):
    # After several rounds of real training every agent holds the statistics of ALL agents' observations: what one
    # RunningMeanStd fed every observation would hold (1e-10, float64).
    env = make_federated_vec_env(POINT_MASS, n_agents=3, n_envs_per_agent=2, seed=0)
    recorder = RecordObservations(env)
    wrapper = FederatedVecNormalize(recorder)
    model = algo("MlpPolicy", wrapper, n_steps=8, seed=0, policy_kwargs={"net_arch": [8]})
    model.learn(1500)
    assert model._n_rounds >= 3
    reference = pooled(recorder.seen, (4,))
    assert reference.count > 1000
    assert_same_statistics(wrapper.obs_rms, reference)
    for i in range(3):
        assert_same_statistics(wrapper.agent_obs_rms[i], reference)
    env.close()


def test_partial_participation_keeps_the_unmerged_deltas():
    # Only the round's participants are merged; the others keep their deltas (normalising with global ⊕ delta), so
    # global ⊕ every remaining delta is still exactly the pooled statistics: nothing is lost or counted twice.
    env = make_federated_vec_env(POINT_MASS, n_agents=4, n_envs_per_agent=1, seed=0)
    recorder = RecordObservations(env)
    wrapper = FederatedVecNormalize(recorder)
    model = FederatedPG("MlpPolicy", wrapper, n_steps=8, seed=0, participation=0.5, policy_kwargs={"net_arch": [8]})
    model.learn(800)
    reference = pooled(recorder.seen, (4,))
    assert wrapper.obs_rms.count < reference.count  # some deltas are still waiting
    counts = [wrapper.obs_deltas[i].count for i in range(4)]
    assert 0 < sum(c > 0 for c in counts) < 4
    merged = fedmath.merge_running_moments([rms_moments(wrapper.obs_rms)] + [rms_moments(d) for d in wrapper.obs_deltas])
    assert merged[0] == pytest.approx(reference.count, abs=TOL)
    np.testing.assert_allclose(merged[1], reference.mean, rtol=0, atol=TOL)
    np.testing.assert_allclose(merged[2] / merged[0], reference.var, rtol=0, atol=TOL)
    for i in range(4):  # each agent normalises with global ⊕ its own delta
        own = fedmath.merge_running_moments([rms_moments(wrapper.obs_rms), rms_moments(wrapper.obs_deltas[i])])
        np.testing.assert_allclose(wrapper.agent_obs_rms[i].mean, own[1], rtol=0, atol=TOL)
    env.close()


def test_each_agent_normalises_with_its_own_statistics_during_a_round():
    env = make_federated_vec_env(POINT_MASS, n_agents=2, n_envs_per_agent=2, seed=0)
    wrapper = FederatedVecNormalize(env, clip_obs=5.0)
    obs = wrapper.reset()
    for _ in range(5):
        obs, *_ = wrapper.step(np.stack([wrapper.action_space.sample() for _ in range(4)]))
    raw = wrapper.get_original_obs()
    for i in range(2):
        rms = wrapper.agent_obs_rms[i]
        expected = np.clip((raw[2 * i : 2 * i + 2] - rms.mean) / np.sqrt(rms.var + 1e-8), -5, 5)
        np.testing.assert_allclose(obs[2 * i : 2 * i + 2], expected, rtol=0, atol=1e-6)
    assert not np.allclose(wrapper.agent_obs_rms[0].mean, wrapper.agent_obs_rms[1].mean)
    # in evaluation mode every agent uses the global (merged) statistics and nothing is updated
    wrapper.merge()
    wrapper.training = False
    count = wrapper.obs_rms.count
    obs, *_ = wrapper.step(np.stack([wrapper.action_space.sample() for _ in range(4)]))
    np.testing.assert_allclose(obs, wrapper.normalize_obs(wrapper.get_original_obs()), rtol=0, atol=1e-6)
    assert wrapper.obs_rms.count == count
    env.close()


def test_one_agent_normalises_as_sb3_vec_normalize():
    envs = [make_federated_vec_env(POINT_MASS, n_agents=1, n_envs_per_agent=3, seed=5) for _ in range(2)]
    ours, theirs = FederatedVecNormalize(envs[0]), VecNormalize(envs[1], norm_reward=False)
    np.testing.assert_allclose(ours.reset(), theirs.reset(), rtol=0, atol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(30):
        actions = rng.uniform(-1, 1, size=(3, *ours.action_space.shape)).astype(np.float32)
        a, ra, _, _ = ours.step(actions)
        b, rb, _, _ = theirs.step(actions)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(ra, rb)
    np.testing.assert_allclose(ours.agent_obs_rms[0].var, theirs.obs_rms.var, rtol=1e-6)
    for env in envs:
        env.close()


def test_save_load_round_trip(tmp_path):
    env = make_federated_vec_env(POINT_MASS, n_agents=2, n_envs_per_agent=2, seed=0)
    wrapper = FederatedVecNormalize(env, clip_obs=3.0)
    wrapper.reset()
    for _ in range(4):
        wrapper.step(np.stack([wrapper.action_space.sample() for _ in range(4)]))
    wrapper.merge()
    wrapper.step(np.stack([wrapper.action_space.sample() for _ in range(4)]))  # unmerged deltas travel too
    path = tmp_path / "vecnormalize.pkl"
    wrapper.save(str(path))
    fresh = make_federated_vec_env(POINT_MASS, n_agents=2, n_envs_per_agent=2, seed=1)
    loaded = FederatedVecNormalize.load(str(path), fresh)
    assert isinstance(loaded, FederatedVecNormalize) and loaded.clip_obs == 3.0 and loaded.training
    assert loaded.statistics_state().keys() == wrapper.statistics_state().keys()
    for a, b in zip(
        [loaded.obs_rms, *loaded.obs_deltas, *loaded.agent_obs_rms],
        [wrapper.obs_rms, *wrapper.obs_deltas, *wrapper.agent_obs_rms],
        strict=True,
    ):
        assert a.count == b.count
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.var, b.var)
    obs = np.ones((4, 4), np.float32)
    np.testing.assert_array_equal(loaded.normalize_obs(obs), wrapper.normalize_obs(obs))
    # an evaluation env of another size (one agent): every agent starts from the merged statistics
    eval_env = make_federated_vec_env(POINT_MASS, n_agents=1, n_envs_per_agent=3, seed=2)
    with pytest.warns(UserWarning, match="not yet merged"):
        evaluation = FederatedVecNormalize.load(str(path), eval_env)
    evaluation.training = False
    np.testing.assert_array_equal(evaluation.normalize_obs(obs), wrapper.normalize_obs(obs))
    # a plain VecNormalize file is not a FederatedVecNormalize
    plain = VecNormalize(make_federated_vec_env(POINT_MASS, n_agents=1, n_envs_per_agent=1), norm_reward=False)
    plain.save(str(tmp_path / "plain.pkl"))
    with pytest.raises(TypeError, match="not a FederatedVecNormalize"):
        FederatedVecNormalize.load(str(tmp_path / "plain.pkl"), make_federated_vec_env(POINT_MASS, n_agents=1))
    for e in (env, fresh, eval_env):
        e.close()


def test_model_save_load_with_normalised_env_predicts_the_same(tmp_path):
    env = make_federated_vec_env(POINT_MASS, n_agents=2, n_envs_per_agent=2, seed=0)
    wrapper = FederatedVecNormalize(env)
    model = FederatedPG("MlpPolicy", wrapper, n_steps=8, seed=0, policy_kwargs={"net_arch": [8]})
    model.learn(200)
    model.save(tmp_path / "model.zip")
    wrapper.save(str(tmp_path / "vecnormalize.pkl"))
    eval_env = FederatedVecNormalize.load(
        str(tmp_path / "vecnormalize.pkl"), make_federated_vec_env(POINT_MASS, n_agents=2, n_envs_per_agent=2, seed=3)
    )
    eval_env.training = False
    loaded = FederatedPG.load(tmp_path / "model.zip", env=eval_env)
    obs = eval_env.reset()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    env.close()


def test_refusals():
    env = make_federated_vec_env(POINT_MASS, n_agents=2, n_envs_per_agent=2, seed=0)
    with pytest.raises(ValueError, match="does not normalise rewards"):
        FederatedVecNormalize(env, norm_reward=True)
    with pytest.raises(ValueError, match="cannot be split evenly"):
        FederatedVecNormalize(env, n_agents=3)
    # SB3's VecNormalize pools every agent's statistics: refused for a federation, pointing at FederatedVecNormalize
    with pytest.raises(ValueError, match=r"2 agents: the env is wrapped in SB3's VecNormalize.*FederatedVecNormalize"):
        FederatedPG("MlpPolicy", VecNormalize(env), n_steps=8)
    model = FederatedPG("MlpPolicy", env, n_steps=8)
    with pytest.raises(ValueError, match="pools every agent's observations"):
        model.set_env(VecNormalize(env, norm_reward=False))
    # fixed statistics (training=False) pool nothing; one agent is SB3's own case
    FederatedPG("MlpPolicy", VecNormalize(env, training=False), n_steps=8)
    one = make_federated_vec_env(POINT_MASS, n_agents=1, n_envs_per_agent=2, seed=0)
    FederatedPG("MlpPolicy", VecNormalize(one), n_steps=8)
    for e in (env, one):
        e.close()


def test_dict_observations_are_normalised_per_key():
    from tests.common.test_dict_observations import DictWalk

    env = make_federated_vec_env(DictWalk, reward_fns=[lambda o, a, n, r: r] * 2, n_envs_per_agent=2, seed=0)
    recorder = RecordObservations(env)
    wrapper = FederatedVecNormalize(recorder, norm_obs_keys=["position"])
    model = FederatedPG("MultiInputPolicy", wrapper, n_steps=8, seed=0, policy_kwargs={"net_arch": [8]})
    model.learn(200)
    assert set(wrapper.obs_rms) == {"position"}
    reference = pooled([batch["position"] for batch in recorder.seen], (1,))
    assert_same_statistics(wrapper.obs_rms["position"], reference)
    obs = wrapper.reset()
    np.testing.assert_array_equal(obs["step"], wrapper.get_original_obs()["step"])  # not normalised
    env.close()
