"""load and set_parameters refuse what would only fail later, and say what is wrong with a file."""

import zipfile

import pytest
import torch as th

from sb3_fedpg import FederatedPG, FederatedPPO
from sb3_fedpg.svrpgm import FederatedSVRPGM

ALGOS = [FederatedPG, FederatedPPO, FederatedSVRPGM]


def rewrite(path, out, member, transform):
    """Copy a zip with one member rewritten (``transform(bytes) -> bytes | None``; ``None`` drops it)."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == member:
                data = transform(data)
                if data is None:
                    continue
            dst.writestr(item, data)


def nan_policy(data):
    import io

    state = th.load(io.BytesIO(data), weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = th.full_like(state[first], float("nan"))
    buffer = io.BytesIO()
    th.save(state, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("cls", ALGOS)
@pytest.mark.parametrize("fmt", ["sb3", "safetensors"])
def test_a_file_with_nan_weights_is_refused_by_load_and_set_parameters(tiny_model, tmp_path, cls, fmt):
    model = tiny_model(cls)
    model.save(tmp_path / "good.zip", format=fmt)
    bad = tmp_path / "bad.zip"
    if fmt == "sb3":
        rewrite(tmp_path / "good.zip", bad, "policy.pth", nan_policy)
    else:  # NaN into the model, then saved: the weights-only path checks the same way
        nan_model = tiny_model(cls)
        with th.no_grad():
            next(nan_model.policy.parameters()).fill_(float("nan"))
        nan_model.save(bad, format=fmt)
    before_bytes = bad.read_bytes()
    with pytest.raises(ValueError, match=r"non-finite values \(NaN/inf\) in policy\..*Load an earlier checkpoint"):
        cls.load(bad)
    target = tiny_model(cls)
    before = {k: v.clone() for k, v in target.policy.state_dict().items()}
    with pytest.raises(FloatingPointError, match=r"set_parameters: .* non-finite values .* nothing was changed"):
        target.set_parameters(str(bad))
    assert all(th.equal(before[k], v) for k, v in target.policy.state_dict().items())
    assert bad.read_bytes() == before_bytes


def test_set_parameters_with_a_nan_state_dict_changes_nothing(tiny_model):
    model = tiny_model(FederatedPG)
    params = model.get_parameters()
    first = next(iter(params["policy"]))
    params["policy"][first] = th.full_like(params["policy"][first], float("nan"))
    before = model.get_global_parameters().clone()
    with pytest.raises(FloatingPointError, match="the state dicts given holds non-finite"):
        model.set_parameters(params)
    assert th.equal(model.get_global_parameters(), before)


@pytest.mark.parametrize("member", ["policy.pth", "critics.pth"])
def test_a_missing_member_is_named(tiny_model, tmp_path, member):
    tiny_model(FederatedPG).save(tmp_path / "good.zip")
    rewrite(tmp_path / "good.zip", tmp_path / "bad.zip", member, lambda data: None)
    with pytest.raises(ValueError, match=rf"it lacks {member}"):
        FederatedPG.load(tmp_path / "bad.zip")


@pytest.mark.parametrize(
    "written, reader", [(FederatedPG, FederatedPPO), (FederatedPPO, FederatedSVRPGM), (FederatedSVRPGM, FederatedPG)]
)
def test_another_algorithms_file_is_named(tiny_model, tmp_path, written, reader):
    tiny_model(written).save(tmp_path / "model.zip")
    with pytest.raises(
        ValueError, match=rf"holds a {written.__name__} model, not a {reader.__name__}: load it with {written.__name__}.load"
    ):
        reader.load(tmp_path / "model.zip")
