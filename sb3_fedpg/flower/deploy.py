"""
A real Flower deployment on 127.0.0.1: one SuperLink, N SuperNodes (one agent each), beside each
SuperNode its long-lived agent worker (:mod:`sb3_fedpg.flower.worker`, supervised: restarted when it
dies), ``flwr run``, and a clean shutdown of every process this launcher started (by process group).

The SuperNodes run with ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.1`` (their SuperExec looks for new
messages every 0.1 s instead of 1 s) and the ServerApp pulls replies every ``reply-poll-s``: with the
agent in its worker, a round costs about what Flower's own message passing costs (see
``benchmarks/flower_overhead.py``).

Optionally with TLS (a throw-away CA and server certificate made at run time with ``cryptography``)
and SuperNode authentication (one EC key pair per SuperNode, registered with
``flwr supernode register``; the SuperLink refuses unregistered nodes).

Command line (see ``docs/flower.md``)::

    python -m sb3_fedpg.flower.deploy --agents 3 --run-config "num-rounds=3"
    python -m sb3_fedpg.flower.deploy --agents 3 --tls --auth --run-config "num-rounds=2"
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import pathlib
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from sb3_fedpg.common.cli import ArgumentParser, interrupted_exit_code, sigterm_as_interrupt

#: The Flower app folder (``[tool.flwr.app]``) that ``flwr run`` packages.
APP_DIR = pathlib.Path(__file__).resolve().parents[2] / "flower_app"
CONNECTION = "loopback"
#: Seconds between the SuperExec's polls for new messages (flwr's default is 1 s; the variable is read by
#: ``flwr.supercore.superexec.run_superexec``).
SUPEREXEC_POLL_S = "0.1"


def free_port() -> int:
    """:return: a TCP port on 127.0.0.1 that is free right now"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float) -> None:
    """
    Wait until something listens on ``127.0.0.1:port``.

    :param port: the TCP port
    :param timeout: seconds to wait at most (``TimeoutError`` after)
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def make_tls_files(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """
    A self-signed CA and a server certificate for ``127.0.0.1``/``localhost`` signed by it.

    :param directory: where to write ``ca.crt``, ``server.pem`` and ``server.key``
    :return: their paths, keys ``ca``, ``cert``, ``key``
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sb3-fedpg test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.crt", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def make_node_key(directory: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    """
    An EC (NIST P-384) key pair in OpenSSH format for SuperNode authentication.

    :param directory: where to write the keys
    :param name: file name stem
    :return: ``(private key path, public key path)``
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = directory / name
    public = directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return private, public


def toml_run_config(run_config: Mapping[str, Any]) -> str:
    """
    :param run_config: kebab-case run config entries
    :return: them as ``flwr run --run-config`` text (TOML values)
    """
    parts = []
    for key, value in run_config.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = json.dumps(str(value))  # a TOML basic string
        parts.append(f"{key}={text}")
    return " ".join(parts)


class LoopbackDeployment:
    """
    SuperLink + SuperNodes on 127.0.0.1, each started here and stopped here by process group.

    :param workdir: folder for ``FLWR_HOME``, certificates, keys and process logs
    :param n_agents: number of SuperNodes (agent ``i`` gets ``partition-id=i num-partitions=n_agents``)
    :param tls: TLS with a CA made at run time
    :param auth: SuperNode authentication (implies ``tls``); every started node is registered first
    :param app_dir: the Flower app folder given to ``flwr run``
    :param workers: start a long-lived agent worker beside each SuperNode (the supported, fast configuration);
        ``False``: every message builds the agent in Flower's per-message ClientApp process (seconds per message)
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        n_agents: int,
        tls: bool = False,
        auth: bool = False,
        app_dir: str | None = None,
        workers: bool = True,
    ) -> None:
        self.workdir = pathlib.Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.n_agents = n_agents
        self.auth = auth
        self.tls = tls or auth  # the SuperLink refuses SuperNode auth without TLS
        self.app_dir = pathlib.Path(app_dir) if app_dir else APP_DIR
        self.workers = workers
        # flwr 1.42 serves the Fleet, Control and Runtime APIs over HTTP on one port.
        self.port = free_port()
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.workdir / "flwr_home"),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": SUPEREXEC_POLL_S,
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.tls_files = make_tls_files(self.workdir / "certificates") if self.tls else None
        self._write_flwr_config()

    # ---------------------------------------------------------------- processes
    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        # A new session: the process and the app processes it spawns form one group we can stop together.
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.processes[name] = process
        return process

    def _security_args(self, node: bool) -> list[str]:
        if not self.tls:
            return ["--insecure"]
        assert self.tls_files is not None
        if node:
            return ["--root-certificates", str(self.tls_files["ca"])]
        return [
            "--ssl-ca-certfile",
            str(self.tls_files["ca"]),
            "--ssl-certfile",
            str(self.tls_files["cert"]),
            "--ssl-keyfile",
            str(self.tls_files["key"]),
        ]

    def start_superlink(self, timeout: float = 60.0) -> subprocess.Popen:
        """
        Start the SuperLink (Fleet, Control and Runtime APIs on 127.0.0.1:port) and wait until it listens.

        :param timeout: seconds to wait for its ports
        :return: the process
        """
        command = [
            "flower-superlink",
            *self._security_args(node=False),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            # The app's dependencies are installed already; never pip-install at run time.
            "--disable-runtime-dependency-installation",
        ]
        if self.auth:
            command.append("--enable-supernode-auth")
        process = self._spawn("superlink", command)
        wait_for_port(self.port, timeout)
        return process

    def start_supernode(self, agent: int, register: bool = True, key_name: str | None = None) -> subprocess.Popen:
        """
        Start the SuperNode of agent ``agent`` (and its agent worker, unless ``workers=False``).

        :param agent: its partition id
        :param register: with ``auth``: register its public key first (``False`` shows a refused node)
        :param key_name: name of its key pair (default ``node<agent>``)
        :return: the process
        """
        name = key_name or f"node{agent}"
        node_config = f"partition-id={agent} num-partitions={self.n_agents}"
        if self.workers:
            from sb3_fedpg.flower.client_app import WORKER_KEY

            # The supervisor makes the private folder and a fresh secret; the ClientApps read it there.
            folder = self.worker_dir(name)
            self._spawn(f"worker_{name}", [sys.executable, "-m", "sb3_fedpg.flower.worker", "--dir", str(folder)])
            node_config += f" {WORKER_KEY}={json.dumps(str(folder))}"
        command = [
            "flower-supernode",
            *self._security_args(node=True),
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--node-config",
            node_config,
            # No --max-retries: like Flower's default, a SuperNode keeps reconnecting to a SuperLink that restarts.
        ]
        if self.auth:
            private, public = make_node_key(self.workdir / "keys", name)
            if register:
                self.flwr("supernode", "register", str(public), CONNECTION, check=True)
            command += ["--auth-supernode-private-key", str(private)]
        return self._spawn(name, command)

    def worker_dir(self, name: str) -> pathlib.Path:
        """
        :param name: the SuperNode's name (``node<i>``)
        :return: the private folder of its agent worker
        """
        return self.workdir / "workers" / name

    def kill_worker(self, agent: int) -> int:
        """
        Kill agent ``agent``'s worker process at once (SIGKILL), as a crash would; its supervisor restarts it.

        :param agent: the agent
        :return: the killed process id
        """
        from sb3_fedpg.flower.worker import PID_FILE

        pid = int((self.worker_dir(f"node{agent}") / PID_FILE).read_text())
        os.kill(pid, signal.SIGKILL)
        return pid

    def start(self, worker_timeout: float = 600.0) -> LoopbackDeployment:
        """
        :param worker_timeout: seconds to wait until every agent worker listens (their torch imports take a while)
        :return: this deployment, with the SuperLink, all SuperNodes and their agent workers started and ready
        """
        self.start_superlink()
        for agent in range(self.n_agents):
            self.start_supernode(agent)
        if self.workers:
            self.wait_for_workers(worker_timeout)
        return self

    def wait_for_workers(self, timeout: float) -> None:
        """
        Wait until every SuperNode's agent worker listens, so that round 1 does not race their start.

        :param timeout: seconds (``TimeoutError`` after)
        """
        from sb3_fedpg.flower.worker import ADDR_FILE

        deadline = time.monotonic() + timeout
        waiting = [self.worker_dir(f"node{agent}") / ADDR_FILE for agent in range(self.n_agents)]
        while waiting := [path for path in waiting if not path.exists()]:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"agent workers not listening after {timeout:g} s: {[str(p.parent) for p in waiting]}")
            time.sleep(0.1)

    def flwr(self, *args: str, check: bool = False, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """
        Run a ``flwr`` CLI command against this deployment.

        :param args: its arguments
        :param check: raise if it fails
        :param timeout: seconds
        :return: the finished process (stdout and stderr captured as text)
        """
        result = subprocess.run(
            ["flwr", *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.workdir
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"flwr {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def submit(self, run_config: Mapping[str, Any]) -> subprocess.Popen:
        """
        Start ``flwr run`` (streaming the run's logs into ``flwr_run.log``); it ends with the run.

        :param run_config: kebab-case run config overrides (``output-dir`` should be absolute)
        :return: the ``flwr run`` process
        """
        command = ["flwr", "run", str(self.app_dir), CONNECTION, "--stream"]
        if run_config:
            command += ["--run-config", toml_run_config(run_config)]
        return self._spawn("flwr_run", command)

    def wait_for_run_id(self, process: subprocess.Popen, timeout: float = 120.0) -> int | None:
        """
        The run id ``flwr run`` prints once the SuperLink accepted the run (``Successfully started run <id>``).

        :param process: the ``flwr run`` process of :meth:`submit`
        :param timeout: seconds to wait
        :return: the run id, or ``None`` if ``flwr run`` ended or timed out without one
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"Successfully started run (\d+)", self.log("flwr_run"))
            if match:
                return int(match.group(1))
            if process.poll() is not None:
                return None
            time.sleep(0.1)
        return None

    def run_status(self, run_id: int) -> tuple[str, str] | None:
        """
        The run's status as the SuperLink reports it (``flwr ls --run-id``): ``flwr run`` exits 0 even when the
        ServerApp failed, so its exit code alone does not say whether the run completed.

        :param run_id: the run
        :return: the status (``finished:completed``, ``finished:failed``, ``running``, ...) and its details;
            ``None`` when the SuperLink does not answer or does not know the run
        """
        result = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        try:
            payload = json.loads(result.stdout)
        except json.JSONDecodeError:
            return None
        runs = payload.get("runs", []) if isinstance(payload, dict) else []
        for run in runs:
            if str(run.get("run-id")) == str(run_id):
                return str(run.get("status", "")), str(run.get("status-details", "") or "")
        return None

    def run(self, run_config: Mapping[str, Any], timeout: float = 600.0) -> int:
        """
        Submit a run and wait for it to end.

        :param run_config: kebab-case run config overrides
        :param timeout: seconds
        :return: the exit code of ``flwr run``
        """
        process = self.submit(run_config)
        return process.wait(timeout=timeout)

    def stop_process(self, name: str, timeout: float = 10.0) -> None:
        """
        Stop one started process and everything it spawned (its process group): SIGTERM, then SIGKILL.

        :param name: ``superlink``, ``node<i>`` or ``flwr_run``
        :param timeout: seconds to wait after SIGTERM
        """
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        pgid = process.pid  # start_new_session: the group id is the process id
        try:
            os.killpg(pgid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            process.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        try:  # children that outlived their parent
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def kill_process(self, name: str) -> None:
        """
        Kill one started process group at once (SIGKILL), as a crash would.

        :param name: ``superlink``, ``node<i>`` or ``flwr_run``
        """
        process = self.processes.pop(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)

    def stop(self) -> None:
        """Stop everything this deployment started: ``flwr run``, the SuperNodes, then the SuperLink."""
        for name in sorted(self.processes, key=lambda n: (n == "superlink", n)):
            self.stop_process(name)

    def __enter__(self) -> LoopbackDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self, name: str) -> str:
        """
        :param name: ``superlink``, ``node<i>`` or ``flwr_run``
        :return: that process's output so far
        """
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_flwr_config(self) -> None:
        home = self.workdir / "flwr_home"
        home.mkdir(parents=True, exist_ok=True)
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]"]
        lines.append(f'address = "127.0.0.1:{self.port}"')
        if self.tls_files is not None:
            lines.append(f'root-certificates = "{self.tls_files["ca"]}"')
        else:
            lines.append("insecure = true")
        (home / "config.toml").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """
    Command line: start a loopback deployment, run the app to completion, stop everything.

    :param argv: arguments (default ``sys.argv[1:]``)
    :return: the exit code of ``flwr run``, or 1 when it was 0 but the run did not complete (a failed ServerApp)
    """
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--agents", type=int, default=3, help="number of SuperNodes (agents)")
    parser.add_argument("--workdir", default="runs/flower_deploy", help="FLWR_HOME, certificates, keys and logs")
    parser.add_argument("--tls", action="store_true", help="TLS with a CA made at run time")
    parser.add_argument("--auth", action="store_true", help="SuperNode authentication (implies --tls)")
    parser.add_argument("--run-config", default="", help='kebab-case overrides, e.g. "num-rounds=3 task=\\"tabular\\""')
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before the run is stopped")
    parser.add_argument(
        "--keep-up",
        action="store_true",
        help="after the run, keep the SuperLink, SuperNodes and workers up (for flwr ls/log/run) until Ctrl-C",
    )
    parser.add_argument("--no-workers", action="store_true", help="no agent workers: every message builds the agent anew")
    args = parser.parse_args(argv)

    workdir = pathlib.Path(args.workdir).resolve()
    run_config: dict[str, Any] = {}
    for item in shlex.split(args.run_config):
        key, _, value = item.partition("=")
        run_config[key] = _parse_value(value)
    run_config.setdefault("output-dir", str(workdir / "output"))
    run_config.setdefault("num-agents", args.agents)
    # SIGTERM (kill, docker stop, a scheduler) ends like Ctrl-C: the SuperLink, SuperNodes and workers are stopped.
    try:
        with (
            sigterm_as_interrupt(),
            LoopbackDeployment(workdir, args.agents, tls=args.tls, auth=args.auth, workers=not args.no_workers) as deployment,
        ):
            return _run(deployment, args, workdir, run_config)
    except KeyboardInterrupt as error:
        print(
            f"interrupted ({error or 'Ctrl-C'}): the federation was stopped. The server writes checkpoint.npz after every "
            f"round in {run_config['output-dir']}: run again with resume=true to continue from the last complete round.",
            flush=True,
        )
        return interrupted_exit_code(error)


def _run(deployment: LoopbackDeployment, args: argparse.Namespace, workdir: pathlib.Path, run_config: dict[str, Any]) -> int:
    """
    :param deployment: the started-to-be deployment
    :param args: the command-line arguments
    :param workdir: the deployment's folder
    :param run_config: the run's configuration
    :return: the exit code (see :func:`main`)
    """
    deployment.start()
    print(f"SuperLink and {args.agents} SuperNodes on 127.0.0.1 (logs in {workdir}); running...", flush=True)
    process = deployment.submit(run_config)
    run_id = deployment.wait_for_run_id(process)
    print(f"run id {run_id}: follow it with `FLWR_HOME={deployment.env['FLWR_HOME']} flwr log {run_id}`", flush=True)
    code = process.wait(timeout=args.timeout)
    print(deployment.log("flwr_run")[-4000:])
    status = deployment.run_status(run_id) if run_id is not None else None
    if status is None or status[0] != "finished:completed":
        said = (
            "no run was started"
            if run_id is None
            else f"run {run_id} "
            + (f"ended as {status[0]}" + (f": {status[1]}" if status[1] else "") if status else "has no status")
        )
        print(f"the run did not complete ({said}); see {workdir / 'flwr_run.log'}", flush=True)
        code = code or 1
    print(f"flwr run exited with {code}; outputs in {run_config['output-dir']}")
    if args.keep_up:
        print(
            f"Federation kept up: export FLWR_HOME={deployment.env['FLWR_HOME']}; then `flwr ls`, `flwr log <run-id>`, "
            f"`flwr run {deployment.app_dir} {CONNECTION}`, `flwr stop <run-id>`. Ctrl-C stops everything.",
            flush=True,
        )
        try:
            while deployment.processes["superlink"].poll() is None:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
    return code


def _parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text.strip("\"'")


if __name__ == "__main__":
    sys.exit(main())
