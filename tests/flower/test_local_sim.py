"""
The documented ``flwr run flower_app local-sim`` (docs/flower.md, "Simulation with `flwr run`"): its ```bash block,
run verbatim in a scratch folder, trains one round, exits 0 and leaves no process behind; the same block with an app
whose run fails (Flower's runtime dependency installation, the failure this command used to hit) exits non-zero and
leaves no process behind either.

The block runs as a user's shell would: the wrapper gives the SuperLink free ports of its own (flwr's default, 39091,
is one per machine), and a marker in the block's environment, which every process it starts inherits, lets the check
for survivors see this test's processes only.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from sb3_fedpg.flower.deploy import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "flower.md"
SECTION = "**Simulation with `flwr run`**"


def documented_block() -> str:
    """:return: the first ```bash block of docs/flower.md's "Simulation with `flwr run`" section"""
    text = DOC.read_text()
    start = text.index(SECTION)
    match = re.compile(r"^```bash\n(.*?)^```", re.S | re.M).search(text, start)
    assert match is not None, f"no ```bash block after {SECTION} in {DOC}"
    return match.group(1)


def survivors(marker: str) -> dict[int, str]:
    """:return: pid -> command line of every live (not zombie) process whose environment carries ``marker``"""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read().decode(errors="replace")
            if stat[stat.rfind(")") + 2 :].split()[0] == "Z":
                continue
            with open(f"/proc/{entry}/environ", "rb") as file:
                environ = file.read()
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                cmdline = file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker.encode() in environ:
            found[int(entry)] = cmdline
    return found


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_block(workdir: pathlib.Path, timeout: float = 480.0) -> tuple[subprocess.CompletedProcess, dict[int, str], int]:
    """
    Run the documented block with ``bash -euo pipefail`` (as the docs-block test does) in ``workdir`` (which holds a
    ``flower_app``).

    :return: the completed process, the processes of it still alive afterwards (then killed), the SuperLink's port
    """
    block = documented_block()
    marker = f"SB3_FEDPG_TEST_MARKER={uuid.uuid4().hex}"
    env = {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        # the block's `python` is this interpreter's environment
        "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        marker.split("=")[0]: marker.split("=")[1],
    }
    for name in ("FLWR_HOME", "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "FLWR_LOCAL_CONTROL_API_PORT"):
        env.pop(name, None)  # the block chooses FLWR_HOME, the wrapper the ports
    try:
        options = {"cwd": workdir, "env": env, "capture_output": True, "text": True, "start_new_session": True}
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], timeout=timeout, **options)
    finally:
        deadline = time.monotonic() + 3.0  # a process that is exiting right now gets a moment
        left = survivors(marker)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = survivors(marker)
        for pid in left:  # started by this test: never leave them to the next one
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    found = re.search(r"local SuperLink this command started on 127\.0\.0\.1:(\d+)", result.stderr)
    assert found is not None, f"the wrapper did not stop a SuperLink it started:\n{result.stderr[-6000:]}"
    return result, left, int(found.group(1))


@pytest.fixture
def workdir(tmp_path):
    """A scratch folder with a copy of the Flower app, where the block runs (its FLWR_HOME and outputs land here)."""
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copytree(REPO / "flower_app", folder / "flower_app")
    return folder


def test_the_documented_block_runs_flwr_run_on_a_local_simulation_connection():
    block = documented_block()
    assert "flwr run flower_app local-sim" in block
    assert 'address = ":local:"' in block and "options.num-supernodes" in block
    assert "<" not in block.replace("<<'EOF'", "")  # no <placeholders>: it runs as written


def test_documented_local_sim_trains_one_round_exits_0_and_leaves_no_process(workdir):
    result, left, port = run_block(workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert not left, f"processes left running: {left}"
    assert not listening(port), "the local SuperLink still listens"
    out = workdir / "runs" / "flower_local_sim"
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1]
    assert rounds[0]["phase1_agents"] == 2 and rounds[0]["phase2_agents"] == 2
    assert (out / "model.zip").stat().st_size > 0
    assert "round 1/1: 2 anchors, 2 changes averaged" in output  # the ServerApp's log, streamed by flwr run
    assert "finished:completed" in result.stderr
    assert port != 39091  # a SuperLink of its own, not flwr's machine-wide default
    # the app installs nothing at run time: it declares no dependencies
    assert "No additional application dependencies needed installation" in output


def test_documented_local_sim_reports_a_failed_run_and_leaves_no_process(workdir):
    # The failure the command used to meet, made offline-safe: Flower's runtime installation of a dependency that
    # cannot be installed. `flwr run --stream` itself exits 0 here; the wrapper must not.
    pyproject = workdir / "flower_app" / "pyproject.toml"
    text = pyproject.read_text()
    assert "\ndependencies = []\n" in text
    pyproject.write_text(
        text.replace(
            "\ndependencies = []\n", '\ndependencies = ["sb3-fedpg-missing @ file:///nonexistent/sb3-fedpg-missing"]\n'
        )
    )
    result, left, port = run_block(workdir)
    assert result.returncode == 1, (result.stdout + result.stderr)[-6000:]
    assert not left, f"processes left running: {left}"
    assert not listening(port)
    assert "finished:failed" in result.stderr and "uv sync failed" in result.stderr
    assert "1 of 1 run(s) did not complete" in result.stderr
    assert not (workdir / "runs" / "flower_local_sim" / "model.zip").exists()


def test_local_sim_wrapper_passes_on_a_failing_command_and_stop_finds_nothing():
    env = {**os.environ, "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()), "FLWR_TELEMETRY_ENABLED": "0"}
    command = [sys.executable, "-m", "sb3_fedpg.flower.local_sim"]
    failing = subprocess.run([*command, "bash", "-c", "exit 3"], env=env, capture_output=True, text=True, timeout=120)
    assert failing.returncode == 3 and "exited with code 3" in failing.stderr
    assert subprocess.run([*command, "true"], env=env, capture_output=True, timeout=120).returncode == 0
    stop = subprocess.run([*command, "--stop"], env=env, capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0 and "no local SuperLink runs" in stop.stderr
    assert subprocess.run(command, env=env, capture_output=True, timeout=120).returncode == 2  # no command
