"""FedSVRPG-M's step sizes in the comparison are the tuning study's winners (benchmarks/svrpgm_tuning.py)."""

import json
import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def st():
    sys.path.insert(0, str(BENCHMARKS))
    import svrpgm_tuning

    return svrpgm_tuning


def test_the_comparison_uses_the_tuned_step_size_of_every_tuned_family(st, tmp_path):
    committed = json.loads((BENCHMARKS / "results" / "svrpgm_tuning.json").read_text())
    st.report(tmp_path)
    rebuilt = json.loads((tmp_path / "svrpgm_tuning.json").read_text())
    assert rebuilt == committed  # the committed table is what the cached runs give
    for name, family in committed["families"].items():
        if family["complete"]:
            assert st.pc.SVRPGM_LEARNING_RATES[name] == family["best"], name
            assert st.pc.FAMILIES[name]["fedsvrpgm"]["learning_rate"] == family["best"], name
        else:  # not tuned yet: no step size is claimed for it
            assert name not in st.pc.SVRPGM_LEARNING_RATES, name


def test_the_grid_extends_beyond_an_edge_winner(st, monkeypatch):
    runs = {0.003: 1.0, 0.01: 2.0, 0.03: 3.0, 0.1: 4.0, 0.3: 5.0}
    monkeypatch.setattr(st, "tried", lambda name: {lr: {"global_return": [v] * 3} for lr, v in runs.items()})
    assert st.next_rates("any") == [1.0]  # the best is the largest: one half-decade up
    runs[0.3] = 0.0
    assert st.next_rates("any") == []  # interior winner: done
    monkeypatch.setattr(st, "tried", lambda name: {lr: {"failed": "NaN"} for lr in runs})
    assert st.next_rates("any") == [0.001]  # everything diverged: one half-decade down
