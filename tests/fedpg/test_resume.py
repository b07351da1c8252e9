import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch as th

from sb3_fedpg import FederatedPG
from sb3_fedpg.common.callbacks import RoundCheckpointCallback, latest_checkpoint, list_checkpoints

SMALL = dict(n_steps=8, local_steps=2, n_envs_per_agent=2, policy_kwargs=dict(net_arch=[16]))

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import torch as th
    th.set_num_threads(1)
    from stable_baselines3.common.callbacks import BaseCallback
    from sb3_fedpg import FederatedPG
    from sb3_fedpg.common.callbacks import RoundCheckpointCallback

    mode, folder, total, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    class Slow(BaseCallback):
        # Gives the test time to kill the process mid-run; changes no result.
        def _on_step(self):
            time.sleep(0.002)
            return True

    ckpt = RoundCheckpointCallback(save_freq=3, save_path=folder)
    if mode == "train":
        model = FederatedPG(
            "MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=3, seed=5, participation=0.67,
            estimator=sys.argv[5], n_steps=8, local_steps=2, n_envs_per_agent=2, policy_kwargs=dict(net_arch=[16]),
            local_optimizer="adam", learning_rate=3e-3,
        )
        model.learn(total, callback=[Slow(), ckpt])
    else:
        model = FederatedPG.load_checkpoint(mode)
        model.learn(total - model.num_timesteps, reset_num_timesteps=False, callback=[Slow(), ckpt])
    np.save(out, model.get_global_parameters().cpu().numpy())
    """
)


def run(tmp_path, *args):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), *map(str, args)])


@pytest.mark.parametrize("estimator", ["gae", "gpomdp"])
def test_sigkill_and_resume_is_bit_identical(tmp_path, estimator):
    total = 3000
    reference = run(tmp_path, "train", tmp_path / "ref_ckpt", total, tmp_path / "ref.npy", estimator)
    assert reference.wait(timeout=240) == 0

    victim = run(tmp_path, "train", tmp_path / "ckpt", total, tmp_path / "victim.npy", estimator)
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(tmp_path / "ckpt")) < 2:
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "victim.npy").exists()  # it really died mid-training
    for path in list_checkpoints(tmp_path / "ckpt"):
        FederatedPG.load(path)  # every checkpoint on disk is complete (atomic writes)

    last = latest_checkpoint(tmp_path / "ckpt")
    resumed = run(tmp_path, last, tmp_path / "ckpt", total, tmp_path / "resumed.npy")
    assert resumed.wait(timeout=240) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "resumed.npy"), np.load(tmp_path / "ref.npy"))


def test_checkpoint_round_trip_in_process(tmp_path):
    model = FederatedPG("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=2, seed=0, **SMALL)
    model.learn(200, callback=RoundCheckpointCallback(save_freq=1, save_path=str(tmp_path), keep_last=2))
    found = list_checkpoints(tmp_path)
    assert len(found) == 2
    resumed = FederatedPG.load_checkpoint(found[-1])
    assert resumed._n_rounds == int(found[-1].name.split("_")[1])
    assert resumed._last_obs is not None
    # A plain model file has no resume state.
    model.save(tmp_path / "plain.zip")
    with pytest.raises(ValueError, match="without resume state"):
        FederatedPG.load_checkpoint(tmp_path / "plain.zip")
    th.testing.assert_close(FederatedPG.load(tmp_path / "plain.zip").get_global_parameters(), model.get_global_parameters())


@pytest.mark.parametrize("kwargs, message", [(dict(save_freq=0), "save_freq must be >= 1"), (dict(keep_last=0), "keep_last")])
def test_bad_checkpoint_callback_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        RoundCheckpointCallback(**{"save_freq": 1, "save_path": str(tmp_path), **kwargs})


def test_resume_with_another_torch_thread_count_warns(tmp_path):
    import warnings

    from sb3_fedpg.common.persistence import ThreadCountWarning

    threads = th.get_num_threads()
    try:
        th.set_num_threads(2)
        model = FederatedPG("MlpPolicy", "CartPole-v1", n_steps=4, local_steps=1, n_envs_per_agent=2, seed=0)
        model.save_checkpoint(tmp_path / "ckpt.zip")
        with warnings.catch_warnings():
            warnings.simplefilter("error", ThreadCountWarning)
            FederatedPG.load_checkpoint(tmp_path / "ckpt.zip")  # same count: silent
        th.set_num_threads(1)
        with pytest.warns(ThreadCountWarning, match=r"using 2 torch thread\(s\), this one uses 1.*set_num_threads\(2\)"):
            FederatedPG.load_checkpoint(tmp_path / "ckpt.zip")
    finally:
        th.set_num_threads(threads)


def test_resume_on_another_device_warns(tmp_path, monkeypatch):
    # A checkpoint records the device type it was written on; resuming elsewhere draws other random numbers.
    import warnings

    from sb3_fedpg.common.persistence import DeviceChangeWarning

    model = FederatedPG("MlpPolicy", "CartPole-v1", n_steps=4, local_steps=1, n_envs_per_agent=2, seed=0, device="cpu")
    model.save_checkpoint(tmp_path / "cpu.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeviceChangeWarning)
        FederatedPG.load_checkpoint(tmp_path / "cpu.zip", device="cpu")  # same device: silent
    # As if written on a GPU (this machine may have none): the state the GPU path records, then loaded on the CPU.
    monkeypatch.setattr(th.cuda, "get_rng_state", lambda device=None: th.zeros(16, dtype=th.uint8))
    monkeypatch.setattr(model, "device", th.device("cuda"))
    model.save_checkpoint(tmp_path / "gpu.zip")
    with pytest.warns(DeviceChangeWarning, match=r"written on cuda, this run uses cpu.*device='cuda'"):
        resumed = FederatedPG.load_checkpoint(tmp_path / "gpu.zip", device="cpu")
    resumed.learn(8, reset_num_timesteps=False)  # and it still trains


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_checkpoint_keeps_the_gpu_generator(tmp_path):
    # The GPU rollout samples from the device's generator: resuming must restore it, or the runs part at once.
    model = FederatedPG("MlpPolicy", "Pendulum-v1", n_steps=4, local_steps=1, n_envs_per_agent=2, seed=0, device="cuda")
    model.learn(16)
    model.save_checkpoint(tmp_path / "ckpt.zip")
    expected = th.cuda.get_rng_state()
    th.cuda.manual_seed(123)
    FederatedPG.load_checkpoint(tmp_path / "ckpt.zip", device="cuda")
    assert th.equal(th.cuda.get_rng_state(), expected)
