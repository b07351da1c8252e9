import subprocess
import sys

CODE = """
import sys
sys.modules["Box2D"] = None  # as if gymnasium[box2d] / gymnasium[mujoco] were not installed
sys.modules["mujoco"] = None
import gymnasium as gym
import sb3_fedpg
assert "sb3_fedpg/HeteroLunarLander-v0" in gym.registry and "sb3_fedpg/HeteroHalfCheetah-v0" in gym.registry
for env_id in ("sb3_fedpg/HeteroLunarLander-v0", "sb3_fedpg/HeteroHalfCheetah-v0"):
    try:
        gym.make(env_id)
    except gym.error.DependencyNotInstalled:
        pass
    else:
        raise AssertionError(env_id + " made without its dependency")
gym.make("sb3_fedpg/HeteroMountainCarContinuous-v0")
print("ok")
"""


def test_import_without_box2d_and_mujoco():
    # A subprocess: the missing modules must be missing before sb3_fedpg is first imported.
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
