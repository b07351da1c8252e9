"""
The long-lived agent worker of one SuperNode: it holds the agent (environment, local critic, anchor, random
streams) and the heavy imports (torch, Stable-Baselines3), so that Flower's per-message ClientApp process only
forwards vectors to it.

flwr 1.42 starts a fresh ClientApp process for every message of a deployment; importing torch and SB3 and
building the agent there costs seconds per message, more than the work. The ClientApp
(:mod:`sb3_fedpg.flower.client_app`) therefore sends each phase request to this worker over loopback TCP
(``127.0.0.1``, an ephemeral port) authenticated with a per-worker secret (``multiprocessing.connection``'s HMAC
challenge in both directions, before anything is unpickled), and returns the worker's reply.

The worker's folder (private, mode 0700) holds ``worker.key`` (the secret, 0600), ``worker.addr`` (``host:port``,
written once it listens) and ``worker.pid``. The SuperNode learns it from its node config,
``agent-worker="<folder>"``. Command line (what :mod:`sb3_fedpg.flower.deploy` runs beside each SuperNode)::

    python -m sb3_fedpg.flower.worker --dir /private/node0-worker

runs a light **supervisor** that starts the worker process and restarts it whenever it dies (a killed worker
loses its agent's memory: that round goes on without the agent, the next one includes it again with a fresh
critic). ``--once`` runs the worker itself, unsupervised.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import signal
import subprocess
import sys
import time
import traceback
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from sb3_fedpg.common.cli import ArgumentParser

KEY_FILE = "worker.key"
ADDR_FILE = "worker.addr"
PID_FILE = "worker.pid"
#: Seconds between a worker's death and its restart (a worker that dies at once does not spin).
RESTART_DELAY_S = 0.5


def prepare_worker_dir(directory: str | os.PathLike) -> pathlib.Path:
    """
    Make the worker's private folder and a fresh secret in it (a new secret per start of the supervisor).

    :param directory: the folder
    :return: its absolute path
    """
    folder = pathlib.Path(directory).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    for name in (ADDR_FILE, PID_FILE):
        (folder / name).unlink(missing_ok=True)
    key = folder / KEY_FILE
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32))
    return folder


def _write_atomically(path: pathlib.Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_key(folder: pathlib.Path) -> bytes:
    try:
        return (folder / KEY_FILE).read_text().strip().encode()
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"no agent worker secret in {folder}: start the worker with `python -m sb3_fedpg.flower.worker --dir {folder}`"
        ) from error


def serve(folder: pathlib.Path) -> None:
    """
    The worker: answer phase requests one at a time, forever (until SIGTERM).

    :param folder: the worker's folder (its secret must exist)
    """
    from sb3_fedpg.flower.phases import InProcessMemory, PhaseRequest, answer

    key = _read_key(folder)
    # Pay the heavy imports once, before the first message: torch, SB3, the algorithm, and torch's lazy
    # dynamo import that the first Adam optimiser triggers (seconds; NOTES.md and issue 14).
    import torch as th

    import sb3_fedpg.fedpg  # noqa: F401

    th.set_num_threads(1)
    th.optim.Adam([th.zeros(1, requires_grad=True)])
    memories: dict[tuple[Any, int], InProcessMemory] = {}
    with Listener(("127.0.0.1", 0), authkey=key) as listener:
        host, port = listener.address
        _write_atomically(folder / ADDR_FILE, f"{host}:{port}")
        print(f"agent worker {os.getpid()} listening on {host}:{port}", flush=True)
        while True:
            try:
                conn = listener.accept()  # the HMAC challenge runs here: no secret, no connection
            except Exception as error:  # a failed HMAC challenge (AuthenticationError), a client that went away
                print(f"refused a connection: {type(error).__name__}: {error}", flush=True)
                continue
            with conn:
                try:
                    if not conn.poll(30.0):
                        continue
                    request = PhaseRequest(**conn.recv())
                    slot = (request.run_id, request.agent)
                    if slot not in memories:
                        if len(memories) >= 8:  # older runs' anchors are of no use any more
                            memories.pop(next(iter(memories)))
                        memories[slot] = InProcessMemory()
                    vector, metrics = answer(request, memories[slot])
                    conn.send({"vector": vector, "metrics": metrics})
                except (OSError, EOFError):
                    continue  # the ClientApp went away; nothing to answer
                except Exception:
                    try:
                        conn.send({"error": traceback.format_exc(limit=8)})
                    except (OSError, EOFError):
                        pass


def request_worker(
    directory: str | os.PathLike, request: dict[str, Any], timeout: float, connect_timeout: float = 60.0
) -> Any:
    """
    Send one phase request to the agent worker in ``directory`` and wait for its reply.

    :param directory: the worker's folder (node config ``agent-worker``)
    :param request: the :class:`~sb3_fedpg.flower.phases.PhaseRequest` fields
    :param timeout: seconds to wait for the reply
    :param connect_timeout: seconds to wait for a worker that is (re)starting
    :return: ``(vector, metrics)``
    """
    folder = pathlib.Path(directory)
    deadline = time.monotonic() + connect_timeout
    while True:
        try:
            host, _, port = (folder / ADDR_FILE).read_text().strip().rpartition(":")
            conn: Connection = Client((host, int(port)), authkey=_read_key(folder))
            break
        except (FileNotFoundError, ConnectionRefusedError, ValueError):  # (re)starting
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no agent worker answers in {folder} after {connect_timeout:g} s "
                    f"(is `python -m sb3_fedpg.flower.worker --dir {folder}` running?)"
                ) from None
            time.sleep(0.05)
    with conn:
        try:
            conn.send(request)
            if not conn.poll(timeout):
                raise TimeoutError(f"the agent worker in {folder} did not answer within {timeout:g} s")
            reply = conn.recv()
        except (EOFError, OSError) as error:
            raise RuntimeError(
                f"the agent worker in {folder} went away before replying ({type(error).__name__}): killed or crashed; "
                "its supervisor restarts it for the next message"
            ) from error
    if "error" in reply:
        raise RuntimeError(f"the agent worker failed:\n{reply['error']}")
    return reply["vector"], reply["metrics"]


def supervise(folder: pathlib.Path) -> int:
    """
    Start the worker and restart it whenever it exits, until SIGTERM/SIGINT.

    :param folder: the worker's folder
    :return: exit code
    """
    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        (folder / ADDR_FILE).unlink(missing_ok=True)
        child = subprocess.Popen([sys.executable, "-m", "sb3_fedpg.flower.worker", "--dir", str(folder), "--once"])
        _write_atomically(folder / PID_FILE, str(child.pid))
        code = child.wait()
        if not stopping:
            print(f"agent worker {child.pid} exited with {code}; restarting", flush=True)
            time.sleep(RESTART_DELAY_S)
    return 0


def main(argv: list[str] | None = None) -> int:
    """
    Command line: the supervised agent worker of one SuperNode.

    :param argv: arguments (default ``sys.argv[1:]``)
    :return: exit code
    """
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="the worker's private folder (the SuperNode's node config names it)")
    parser.add_argument("--once", action="store_true", help="run the worker itself, without the restarting supervisor")
    args = parser.parse_args(argv)
    folder = pathlib.Path(args.dir).resolve()
    if args.once:
        serve(folder)
        return 0
    prepare_worker_dir(folder)
    return supervise(folder)


if __name__ == "__main__":
    sys.exit(main())
