"""The zoo trainer under faults an operator meets: preemption (SIGTERM), Ctrl-C, bad options, concurrent runs."""

import os
import signal
import subprocess
import sys
import time

import pytest

from sb3_fedpg.zoo.train import claim_run_folder

CMD = [
    sys.executable,
    "-m",
    "sb3_fedpg.zoo.train",
    "--algo",
    "fedpg",
    "--env",
    "sb3_fedpg/HeteroCartPole-v0",
    "--verbose",
    "0",
]


def start_training(tmp_path, extra=()):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [*CMD, "-n", "100000000", "-f", str(tmp_path), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: an ignored SIGINT is inherited across exec (and Python then installs no Ctrl-C handler),
        # and this test process may have inherited one (a background job, or a test run earlier in the same worker)
        preexec_fn=_default_sigint,
    )


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_rounds(tmp_path, process, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        progress = list(tmp_path.glob("fedpg/*/progress.csv"))
        if progress and progress[0].read_text().count("\n") >= 3:  # a header and two rounds logged
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.kill()
    pytest.fail("training did not log two rounds in time")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_terminated_run_saves_its_model_and_a_checkpoint_and_says_so(tmp_path, sig, code):
    from sb3_fedpg import FederatedPG
    from sb3_fedpg.common.callbacks import latest_checkpoint

    process = start_training(tmp_path, ["--save-freq-rounds", "1000"])
    wait_for_rounds(tmp_path, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    run = next(tmp_path.glob("fedpg/*_1"))
    assert "interrupted" in err and str(run) in err and "Traceback" not in err
    model = FederatedPG.load(run / "sb3_fedpg-HeteroCartPole-v0.zip")
    assert model.num_timesteps > 0 and model.num_timesteps % model.steps_per_round == 0  # at a round boundary
    checkpoint = latest_checkpoint(run / "checkpoints")
    assert checkpoint is not None
    assert FederatedPG.load_checkpoint(checkpoint).num_timesteps == model.num_timesteps


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num-threads", "0"], "--num-threads must be >= 1"),
        (["--seed", "99999999999"], "--seed must be < 2\\*\\*32"),
        (["--device", "cuda"], "no CUDA GPU is available here"),
        (["--env", "NoSuchEnv-v0"], "--env NoSuchEnv-v0: .*NoSuchEnv"),
        (["-params", "env_kwargs.heterogeneity:7"], "heterogeneity"),
    ],
)
def test_bad_options_are_one_line_errors_before_anything_is_written(tmp_path, extra, message):
    import re

    if "--device" in extra:
        import torch as th

        if th.cuda.is_available():
            pytest.skip("a GPU is available: --device cuda is valid here")
    result = subprocess.run(
        [*CMD, "-n", "64", "-f", str(tmp_path / "logs"), *extra], capture_output=True, text=True, timeout=120
    )
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, result.stderr.strip().splitlines()[-1]), result.stderr
    assert not list((tmp_path / "logs").glob("*/*"))  # no run folder


def test_a_log_folder_that_is_a_file_is_refused_first(tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    result = subprocess.run([*CMD, "-n", "64", "-f", str(tmp_path / "notes.txt")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_concurrent_runs_get_their_own_run_folders(tmp_path, monkeypatch):
    # two runs that both computed "latest id + 1" before either made its folder: the second takes the next id
    from sb3_fedpg.zoo import train as train_module

    monkeypatch.setattr(train_module, "latest_run_id", lambda log_path, name: 0)
    first = claim_run_folder(tmp_path / "fedpg", "env")
    second = claim_run_folder(tmp_path / "fedpg", "env")
    assert (first.name, second.name) == ("env_1", "env_2")


def test_sigterm_as_interrupt_turns_sigterm_into_a_keyboard_interrupt():
    code = (
        "import os, signal, time\n"
        "from sb3_fedpg.common.cli import Terminated, interrupted_exit_code, sigterm_as_interrupt\n"
        "try:\n"
        "    with sigterm_as_interrupt():\n"
        "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)\n"
        "except KeyboardInterrupt as e:\n"
        "    assert isinstance(e, Terminated)\n"
        "    raise SystemExit(interrupted_exit_code(e))\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 143


def test_resume_from_a_truncated_checkpoint_is_a_one_line_error(tmp_path):
    from sb3_fedpg import FederatedPG

    model = FederatedPG("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=2, n_steps=8, seed=0)
    model.save_checkpoint(tmp_path / "ckpt.zip")
    data = (tmp_path / "ckpt.zip").read_bytes()
    (tmp_path / "ckpt.zip").write_bytes(data[: len(data) // 2])
    result = subprocess.run(
        [*CMD, "-n", "64", "-f", str(tmp_path / "logs"), "--resume", str(tmp_path / "ckpt.zip")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "--resume:" in result.stderr and "is not a readable FederatedPG checkpoint" in result.stderr
