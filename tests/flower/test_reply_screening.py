"""The Flower server validates everything an agent sends: vectors (absolute and relative norm), metrics, agent ids."""

import itertools
import types

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from sb3_fedpg.common.validation import agent_id_problem, clean_metrics, relative_norm_outliers
from sb3_fedpg.flower import server_app
from sb3_fedpg.flower.config import parse_run_config
from sb3_fedpg.flower.server_app import FedPGServer, screen_replies

P = 6
RNG = np.random.default_rng(0)


def _honest(n):
    return [RNG.normal(size=P) * 0.1 for _ in range(n)]  # norm ~0.24, like the honest updates of a neural run


@pytest.mark.parametrize("key", ["anchor", "delta"])
def test_a_sign_flipped_reply_under_the_absolute_bound_is_caught_by_the_relative_one(key):
    honest = _honest(4)
    attack = -honest[0] / np.linalg.norm(honest[0]) * 0.999e6  # passes max-update-norm = 1e6
    received = [(node, v, {"agent": node}) for node, v in enumerate([*honest, attack])]
    accepted, _, problems = screen_replies(received, key, P, 1e6, None)
    assert 4 in accepted  # the absolute bound alone lets it in
    accepted, metrics, problems = screen_replies(received, key, P, 1e6, 10.0)
    assert sorted(accepted) == [0, 1, 2, 3] and sorted(metrics) == [0, 1, 2, 3]
    assert problems[4].startswith(f"rejected {key}: norm 9.99e+05 exceeds 10 x the median norm")


def test_relative_bound_needs_three_replies_and_a_nonzero_median():
    big = np.ones(P) * 1e3
    assert relative_norm_outliers({0: np.ones(P) * 0.1, 1: big}, 10.0) == {}  # two replies: no way to tell
    assert relative_norm_outliers({0: np.zeros(P), 1: np.zeros(P), 2: big}, 10.0) == {}
    assert list(relative_norm_outliers({0: np.ones(P), 1: np.ones(P), 2: big}, 10.0)) == [2]
    assert relative_norm_outliers({0: np.ones(P), 1: np.ones(P), 2: big}, None) == {}


@pytest.mark.parametrize(
    "record, kept, dropped",
    [
        ({"agent": float("nan"), "ep_rew_mean": 10.0}, {}, ["metric 'agent' = nan", "'ep_rew_mean' without a valid"]),
        ({"agent": [1, 2], "num_timesteps": 5}, {"num_timesteps": 5}, ["metric 'agent' is list"]),
        ({"ep_rew_mean": 3.0}, {}, ["'ep_rew_mean' without a valid 'agent'"]),
        ({"agent": 2.5}, {}, ["metric 'agent' = 2.5 is not an agent id"]),
        ({"agent": -1}, {}, ["metric 'agent' = -1"]),
        ({"agent": 2**40}, {}, ["is not an agent id"]),
        ({"agent": 3.0, "ep_rew_mean": float("inf")}, {"agent": 3}, ["metric 'ep_rew_mean' = inf is not finite"]),
        ({"agent": 1, "x": [1.0, 2.0]}, {"agent": 1}, ["metric 'x' is list, not a number"]),
        ("not a mapping", {}, ["metrics are not a mapping"]),
        ({"agent": 1, "ep_rew_mean": 7.5, "num_timesteps": 64}, {"agent": 1, "ep_rew_mean": 7.5, "num_timesteps": 64}, []),
    ],
)
def test_metrics_are_cleaned_never_trusted(record, kept, dropped):
    clean, notes = clean_metrics(MetricRecord(record) if isinstance(record, dict) else record)
    assert clean == kept
    assert len(notes) == len(dropped) and all(d in n for d, n in zip(dropped, notes, strict=True))


def test_agent_id_problem():
    assert agent_id_problem(3) is None and agent_id_problem(3.0) is None and agent_id_problem(np.int64(0)) is None
    for bad in (True, "1", None, float("nan"), float("inf"), -1, 1.5, 2**31, [1]):
        assert agent_id_problem(bad) is not None


def test_duplicate_agent_ids_keep_the_first_reply():
    received = [(10, v, {"agent": 0}) for v in _honest(1)] + [(11, v, {"agent": 0}) for v in _honest(1)]
    received += [(12, v, {"agent": 1}) for v in _honest(1)]
    accepted, _, problems = screen_replies(received, "delta", P, 1e6, 10.0)
    assert sorted(accepted) == [10, 12]
    assert problems == {11: "rejected delta: agent id 0 was already claimed by node 10 in this phase"}


class _FakeMessage:
    _ids = itertools.count()

    def __init__(self, content, dst_node_id, message_type, group_id, ttl=None):
        self.content = content
        self.metadata = types.SimpleNamespace(message_id=f"m{next(self._ids)}", dst_node_id=dst_node_id, ttl=ttl)


class _FakeGrid:
    """Answers every message with the reply its node was given (a list of (vector, metrics) by node)."""

    def __init__(self, answers, timeout):
        self.answers = answers
        self.timeout = timeout
        self.pushed = {}

    def push_messages(self, messages):
        for message in messages:
            assert message.metadata.ttl == self.timeout  # a message lives as long as the server waits for its reply
            self.pushed[message.metadata.message_id] = message
        return list(self.pushed)

    def pull_messages(self, message_ids):
        replies = []
        for message_id in [m for m in self.pushed if m in message_ids]:  # in push order: first claim wins
            message = self.pushed.pop(message_id)
            vector, metrics = self.answers[message.metadata.dst_node_id]
            content = RecordDict({"anchor": ArrayRecord({"anchor": Array(vector)}), "metrics": MetricRecord(metrics)})
            replies.append(
                types.SimpleNamespace(
                    metadata=types.SimpleNamespace(reply_to_message_id=message.metadata.message_id),
                    has_error=lambda: False,
                    content=content,
                )
            )
        return replies


class _Logger:
    def __init__(self):
        self.records = {}

    def record(self, key, value):
        self.records[key] = value

    def dump(self, step):
        pass


def test_the_server_survives_bad_metrics_and_a_huge_anchor(monkeypatch):
    monkeypatch.setattr(server_app, "Message", _FakeMessage)
    honest = _honest(4)
    answers = {
        1: (honest[0], {"agent": float("nan"), "ep_rew_mean": 1.0}),
        2: (honest[1], {"agent": [1.0, 2.0]}),
        3: (honest[2], {"ep_rew_mean": 5.0}),
        4: (honest[3], {"agent": 3, "ep_rew_mean": 9.0, "num_timesteps": 64}),
        5: (honest[3] * -4e6, {"agent": 4}),  # a malicious anchor: it would enter g
        6: (honest[3], {"agent": 3}),  # claims agent 3 again
    }
    # (per-agent normalisation: these replies carry no advantage moments, see the test below)
    config = parse_run_config({"min-agents": 1, "normalize-advantage": "per_agent"})
    server = FedPGServer(_FakeGrid(answers, config.phase_timeout_s), config)
    phase1 = server.anchor_phase(sorted(answers), np.zeros(P), 1)
    assert phase1["nodes"] == [1, 2, 3, 4]  # in agent order: node ids stand in for the missing agent ids
    assert set(phase1["problems"]) == {5, 6}
    np.testing.assert_allclose(phase1["global_grad"], np.mean(honest[:4], axis=0))
    logger = _Logger()
    phase2 = {"nodes": [], "metrics": {}}
    result = types.SimpleNamespace(
        params=np.zeros(P), anchor_grads=phase1["anchors"], global_grad=phase1["global_grad"], local_params=None
    )
    import sb3_fedpg.common.fedmath as fedmath

    monkeypatch.setattr(fedmath, "round_metrics", lambda result, correction: {})
    server.log_round(logger, 1, result, phase1, phase2)
    assert logger.records["fed/agent_3/ep_rew_mean"] == 9.0
    assert logger.records["rollout/ep_rew_mean"] == 9.0
    assert logger.records["time/round_timesteps"] == 64


def test_run_config_of_the_bounds():
    assert parse_run_config().max_update_norm_ratio == 10.0
    assert parse_run_config({"max-update-norm-ratio": 0}).max_update_norm_ratio is None
    for key, value, message in [
        ("max-update-norm", float("nan"), "'max-update-norm' must be a finite number"),
        ("max-update-norm", float("inf"), "'max-update-norm' must be a finite number"),
        ("max-update-norm-ratio", float("nan"), "'max-update-norm-ratio' must be a finite number"),
        ("max-update-norm-ratio", 0.5, r"'max-update-norm-ratio' must be >= 1"),
        ("max-update-norm-ratio", "ten", "'max-update-norm-ratio' must be float"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_run_config({key: value})


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("num-rounds", 2.5, "'num-rounds' must be int"),  # was silently 2
        ("num-rounds", float("inf"), "'num-rounds' must be int"),  # was an OverflowError
        ("resume", 5, "'resume' must be true or false"),  # was truthy
        ("env-id", 5, "'env-id' must be str"),
        ("log-formats", "csv,xml", r"'log-formats': unknown format\(s\) \['xml'\]"),
        ("net-arch", "64,0", r"'net-arch' must list integers in \[1,"),
        ("fault-rounds", 1e300, "'fault-rounds' must list integers"),
        ("fault-rounds", [1], "'fault-rounds' must be comma-separated integers"),
    ],
)
def test_run_config_types_are_strict(key, value, message):
    with pytest.raises(ValueError, match=message):
        parse_run_config({key: value})


def test_shared_normalisation_needs_every_anchor_s_advantage_moments(monkeypatch):
    # Under shared normalisation an anchor is worth nothing without its agent's moments (the server scales it by the
    # pooled standard deviation): a reply without them, or with a negative count, is left out and the reason logged.
    monkeypatch.setattr(server_app, "Message", _FakeMessage)
    honest = _honest(3)
    moments = {"adv-count": 16.0, "adv-m2": 4.0, "adv-groups": 1.0}
    answers = {
        1: (honest[0], {"agent": 0, **moments}),
        2: (honest[1], {"agent": 1}),
        3: (honest[2], {"agent": 2, **moments, "adv-count": -3.0}),
    }
    config = parse_run_config({"min-agents": 1})
    assert config.shared_normalization
    server = FedPGServer(_FakeGrid(answers, config.phase_timeout_s), config)
    phase1 = server.anchor_phase(sorted(answers), np.zeros(P), 1)
    assert phase1["nodes"] == [1]
    assert "advantage moments" in phase1["problems"][2] and "advantage moments" in phase1["problems"][3]
    # one agent: the scale is its own standard deviation, √(M2 / (count − 1))
    assert phase1["advantage_scale"] == pytest.approx((4.0 / 15.0) ** 0.5)
    np.testing.assert_allclose(phase1["global_grad"], honest[0] / (4.0 / 15.0) ** 0.5, rtol=1e-6)
