"""The torch-free modules stay torch-free, and ``envs`` never imports ``common`` (no import cycle)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["sb3_fedpg", "sb3_fedpg.flower.config", "sb3_fedpg.common.hyperparams", "sb3_fedpg.common.adversarial", "sb3_fedpg.envs"],
)
def test_module_imports_no_torch(module):
    code = (
        f"import sys, {module}\n"
        "names = ('torch', 'stable_baselines3', 'flwr', 'sb3_fedpg.common.federated_vec_env')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {module} imported {out}"


def test_lazy_attributes_resolve():
    import sb3_fedpg

    assert sb3_fedpg.FederatedPG.__name__ == "FederatedPG"
    assert callable(sb3_fedpg.make_federated_vec_env)
    with pytest.raises(AttributeError):
        sb3_fedpg.NoSuchThing  # noqa: B018
