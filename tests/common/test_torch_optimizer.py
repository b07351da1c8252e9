"""
Any torch optimiser as each agent's local optimiser (``sb3_fedpg.common.torch_optimizer``): one torch optimiser over
``N`` row leaves is exactly ``N`` independent optimisers, one per agent, and an agent left out of a step keeps its
parameters and its state.
"""

import pytest
import torch as th
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

from sb3_fedpg.common.torch_optimizer import AgentOptimizer, check_optimizer, named_optimizers, requested_optimizer

N, P = 3, 5
OPTIMIZERS = [
    (th.optim.SGD, dict(momentum=0.9)),
    (th.optim.SGD, dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
    (th.optim.Adam, dict(eps=1e-8)),
    (th.optim.AdamW, dict(weight_decay=0.1)),
    (th.optim.RMSprop, dict(centered=True, momentum=0.5)),
    (th.optim.Adagrad, {}),
    (th.optim.Adamax, {}),
    (th.optim.NAdam, {}),
    (th.optim.RAdam, {}),
    (th.optim.Rprop, {}),
    (RMSpropTFLike, dict(eps=1e-5)),
]
#: which agents step at each step (None: all): the per-agent optimisers must see exactly these steps
SCHEDULE = [None, [0, 2], None, [1], [], [2], None]


def run_both(optimizer_class, kwargs, schedule=SCHEDULE, seed=0):
    """The rows optimiser and N separate torch optimisers (one per agent), on the same gradients."""
    gen = th.Generator().manual_seed(seed)
    params = th.randn(N, P, generator=gen)
    rows = AgentOptimizer(optimizer_class, kwargs, N, P, learning_rate=0.1)
    separate = [params[i].clone() for i in range(N)]
    singles = [optimizer_class([p], lr=0.1, **kwargs) for p in separate]
    for step, agents in enumerate(schedule):
        grad = th.randn(N, P, generator=gen)
        lr = 0.1 / (1 + step)  # a schedule: every step sets its own
        rows.step_(params, grad, lr, agents)
        for i in range(N) if agents is None else agents:
            singles[i].param_groups[0]["lr"] = lr
            separate[i].grad = grad[i].clone()
            singles[i].step()
    return params, th.stack(separate), rows, singles


@pytest.mark.parametrize("optimizer_class, kwargs", OPTIMIZERS)
def test_rows_are_independent_per_agent_optimisers(optimizer_class, kwargs):
    params, separate, rows, singles = run_both(optimizer_class, kwargs)
    th.testing.assert_close(params, separate, rtol=0, atol=1e-6)
    for i, single in enumerate(singles):  # each agent's state is its own optimiser's (Adam's step included)
        ours = rows.optimizer.state[rows.leaves[i]]
        theirs = single.state[single.param_groups[0]["params"][0]]
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            if th.is_tensor(value):
                th.testing.assert_close(ours[key], value, rtol=0, atol=1e-6)
            else:
                assert ours[key] == value


def test_skipped_agents_keep_parameters_and_state():
    gen = th.Generator().manual_seed(1)
    rows = AgentOptimizer(th.optim.Adam, {}, N, P, learning_rate=0.1)
    params = th.randn(N, P, generator=gen)
    rows.step_(params, th.randn(N, P, generator=gen), 0.1)
    before = params.clone()
    state = {k: v.clone() for k, v in rows.optimizer.state[rows.leaves[1]].items()}
    rows.step_(params, th.randn(N, P, generator=gen), 0.1, agents=[0, 2])
    assert th.equal(params[1], before[1]) and not th.equal(params[0], before[0]) and not th.equal(params[2], before[2])
    for key, value in rows.optimizer.state[rows.leaves[1]].items():
        assert th.equal(value, state[key]), key  # its step count too
    assert float(rows.optimizer.state[rows.leaves[0]]["step"]) == 2
    assert all(leaf.grad is None for leaf in rows.leaves)  # no gradient left behind


def test_state_dict_round_trip_continues_identically():
    gen = th.Generator().manual_seed(2)
    a = AgentOptimizer(th.optim.SGD, dict(momentum=0.9), N, P, learning_rate=0.1)
    params = th.randn(N, P, generator=gen)
    for _ in range(3):
        a.step_(params, th.randn(N, P, generator=gen), 0.1, [0, 1])
    b = AgentOptimizer(th.optim.SGD, dict(momentum=0.9), N, P, learning_rate=0.5)
    b.load_state_dict(a.state_dict())
    other = params.clone()
    grad = th.randn(N, P, generator=gen)
    a.step_(params, grad, 0.1)
    b.step_(other, grad, 0.1)
    assert th.equal(params, other)
    with pytest.raises(ValueError, match="built-in per-agent rule's"):
        b.load_state_dict({"exp_avg": th.zeros(N, P)})


@pytest.mark.parametrize(
    "optimizer_class, kwargs, message",
    [
        (th.optim.LBFGS, {}, r"LBFGS.*closure.*one fresh on-policy batch"),
        (th.optim.SparseAdam, {}, r"SparseAdam.*sparse gradients only"),
        (th.nn.Linear, {}, "not a torch optimiser class"),
        (th.optim.Adam, dict(lr=0.1), r"\['lr'\] cannot be set.*learning_rate"),
        (th.optim.Adam, dict(maximize=True), r"\['maximize'\] cannot be set.*ascend the return"),
        (th.optim.SGD, dict(mumentum=0.9), r"cannot step one agent's parameters.*mumentum"),
    ],
)
def test_optimisers_that_cannot_be_local_are_refused(optimizer_class, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_optimizer(optimizer_class, kwargs, "FederatedPG")


def test_subclasses_of_refused_optimisers_are_refused():
    class MyLBFGS(th.optim.LBFGS):
        pass

    with pytest.raises(ValueError, match="closure"):
        check_optimizer(MyLBFGS, {}, "FederatedPG")
    if hasattr(th.optim, "Muon"):
        with pytest.raises(ValueError, match="2-D weight matrices"):
            check_optimizer(th.optim.Muon, {}, "FederatedPG")


def test_every_named_optimiser_is_accepted():
    for optimizer_class in named_optimizers().values():
        check_optimizer(optimizer_class, {}, "FederatedPG")


def test_policy_kwargs_are_read_as_sb3_reads_them():
    assert requested_optimizer(None) is None
    assert requested_optimizer({"net_arch": [8], "optimizer_kwargs": None}) is None
    assert requested_optimizer({"optimizer_kwargs": {}}) is None
    # SB3's ActorCriticPolicy: eps=1e-5 for Adam when no keyword arguments are given
    assert requested_optimizer({"optimizer_class": th.optim.Adam}) == (th.optim.Adam, {"eps": 1e-5})
    assert requested_optimizer({"optimizer_class": th.optim.Adam, "optimizer_kwargs": {}}) == (th.optim.Adam, {})
    assert requested_optimizer({"optimizer_class": th.optim.SGD, "optimizer_kwargs": None}) == (th.optim.SGD, {})
    # keyword arguments alone configure SB3's default class
    assert requested_optimizer({"optimizer_kwargs": {"eps": 1e-6}}) == (th.optim.Adam, {"eps": 1e-6})


def test_nonfinite_agents_names_each_agent_and_state_entry():
    from sb3_fedpg.fedpg.local_optim import TorchLocalOptimizer

    optimizer = TorchLocalOptimizer(th.optim.Adam, {}, n_agents=3, n_params=5, learning_rate=0.1)
    params = th.zeros(3, 5)
    optimizer.step_(params, th.ones(3, 5), 0.1)
    assert optimizer.nonfinite_agents() == {}
    state = optimizer.optimizer.state
    state[optimizer.leaves[1]]["exp_avg_sq"][2] = float("nan")
    state[optimizer.leaves[2]]["exp_avg"][0] = float("inf")
    assert optimizer.nonfinite_agents() == {1: ["exp_avg_sq"], 2: ["exp_avg"]}
    # finite entries whose norm overflows float32 are not reported
    for leaf in optimizer.leaves:
        state[leaf]["exp_avg"].fill_(3e38)
        state[leaf]["exp_avg_sq"].fill_(1.0)
    assert optimizer.nonfinite_agents() == {}
