"""
Run ``flwr run`` against Flower's local simulation SuperLink as one command that ends with its run: wait for the
runs it submitted, stop the SuperLink it started (with everything that SuperLink spawned), and exit non-zero unless
every run completed.

Why (flwr 1.42): ``flwr run <app> <connection>`` with a connection whose ``address = ":local:"`` starts a detached
``flower-superlink --simulation`` (in its own session; it starts a SuperExec in another session, which starts one
``flwr-simulation`` process per run, which starts Ray) and leaves it running when the run ends; flwr offers no
command that stops it. And ``flwr run --stream`` exits 0 whatever happened to the run (a ServerApp that raised, a
failed dependency installation): the outcome is only in the log stream and in ``flwr ls``.

The command gets a SuperLink of its own: unless ``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` is set, it runs with that
variable (and ``FLWR_LOCAL_CONTROL_API_PORT``) set to free ports, so flwr starts a fresh local SuperLink there instead
of reusing whatever answers on the machine-wide default port (39091: another user's, another ``FLWR_HOME``'s, another
virtual environment's). With the variable set, a SuperLink already up on that port is used and left running.

Command line (see ``docs/flower.md``)::

    python -m sb3_fedpg.flower.local_sim flwr run flower_app local-sim --stream --run-config "num-rounds=1"
    python -m sb3_fedpg.flower.local_sim --stop      # stop the local SuperLink a plain flwr run left on its port
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sb3_fedpg.common.cli import ArgumentParser, sigterm_as_interrupt

PREFIX = "local_sim:"
#: The environment variables flwr 1.42 reads for its managed local SuperLink's ports (``flwr.cli.constant``).
PORT_VARIABLE = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"
CONTROL_PORT_VARIABLE = "FLWR_LOCAL_CONTROL_API_PORT"


def _say(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def local_superlink_port(environ: dict[str, str] | None = None) -> int:
    """
    :param environ: the environment flwr runs in (default ``os.environ``)
    :return: the port of flwr's managed local SuperLink (its Runtime, Control and Fleet HTTP API) in that environment
    """
    from flwr.cli.constant import LOCAL_SUPERLINK_HTTP_API_PORT  # flwr's default, or the variable when flwr was imported

    return int((os.environ if environ is None else environ).get(PORT_VARIABLE, LOCAL_SUPERLINK_HTTP_API_PORT))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def superlink_is_up(port: int) -> bool:
    """
    :param port: the local SuperLink's port
    :return: whether its health endpoint answers (the probe flwr itself uses before starting one)
    """
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).is_success
    except httpx.HTTPError:
        return False


@dataclass(frozen=True)
class RunState:
    """One run as the SuperLink reports it."""

    run_id: int
    app: str
    status: str  # "pending", "starting", "running" or "finished:<completed|failed|stopped>"
    details: str
    pending_at: datetime.datetime | None

    @property
    def finished(self) -> bool:
        return self.status.startswith("finished")

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


def _timestamp(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def list_runs(port: int) -> list[RunState]:
    """
    :param port: the local SuperLink's port
    :return: every run it knows (its database outlives restarts), through its Control API
    """
    from flwr.common.serde import run_from_proto
    from flwr.proto.control_pb2 import ListRunsRequest  # pylint: disable=no-name-in-module
    from flwr.supercore.control import ControlHttpClient

    client = ControlHttpClient.from_server_address(f"127.0.0.1:{port}", insecure=True, root_certificates=None, interceptors=[])
    try:
        response = client.ListRuns(ListRunsRequest())
    finally:
        client.close()
    runs = []
    for proto in response.run_dict.values():
        run = run_from_proto(proto)
        status = run.status.status + (f":{run.status.sub_status}" if run.status.sub_status else "")
        runs.append(
            RunState(
                run_id=run.run_id,
                app=f"{run.fab_id}=={run.fab_version}",
                status=status,
                details=run.status.details,
                pending_at=_timestamp(run.pending_at),
            )
        )
    return sorted(runs, key=lambda r: r.pending_at or datetime.datetime.min.replace(tzinfo=datetime.timezone.utc))


# --- processes (Linux /proc) -------------------------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, list[str]]]:
    """:return: pid -> (parent pid, argv) of every live process we can read (zombies left out: they run nothing)"""
    if not os.path.isdir("/proc"):  # macOS: ps (arguments split at spaces)
        listing = subprocess.run(["ps", "-axo", "pid=,ppid=,stat=,args="], capture_output=True, text=True, check=True)
        rows = (line.split(None, 3) for line in listing.stdout.splitlines())
        return {int(r[0]): (int(r[1]), r[3].split() if len(r) > 3 else []) for r in rows if len(r) >= 3 and "Z" not in r[2]}
    table: dict[int, tuple[int, list[str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat", "rb") as file:
                stat = file.read().decode(errors="replace")
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                argv = [part.decode(errors="replace") for part in file.read().split(b"\0") if part]
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] == "Z":
            continue
        table[pid] = (int(fields[1]), argv)
    return table


def local_superlink_pids(port: int) -> set[int]:
    """
    :param port: the local SuperLink's port
    :return: the processes that are flwr's managed local SuperLink on that port (``flower-superlink --simulation
        ... --port <port>``, started by ``flwr`` for a ``:local:`` connection)
    """
    found = set()
    for pid, (_, argv) in _processes().items():
        names = [os.path.basename(part) for part in argv[:2]]
        if "flower-superlink" in names and "--simulation" in argv and _option(argv, "--port") == str(port):
            found.add(pid)
    return found


def _option(argv: list[str], name: str) -> str | None:
    for i, part in enumerate(argv[:-1]):
        if part == name:
            return argv[i + 1]
    return None


def _descendants(roots: Iterable[int], table: dict[int, tuple[int, list[str]]]) -> set[int]:
    tree = {pid for pid in roots if pid in table}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in tree} - tree
        tree |= children
        grew = bool(children)
    return tree


def stop_process_trees(roots: set[int], timeout: float = 20.0) -> set[int]:
    """
    Stop processes and everything they spawned, in other sessions too (the SuperLink's SuperExec, its
    ``flwr-simulation`` processes, their Ray processes): SIGTERM to every process of the trees at once, then SIGKILL to
    whatever is left after ``timeout`` seconds.

    All at once because a SIGTERM to the SuperLink alone leaves a running simulation behind (flwr 1.42: the SuperLink
    and its SuperExec exit, the ``flwr-simulation`` process and Ray go on as orphans); and a SuperLink that still
    streams logs to a client waits for that client before it exits, so stop the client first.

    :param roots: process ids
    :param timeout: seconds to wait after SIGTERM
    :return: the processes that were part of the trees
    """
    tree: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        table = _processes()
        grown = _descendants(roots | tree, table)
        for pid in grown - tree:  # the trees at first, then children started meanwhile
            _signal(pid, signal.SIGTERM)
        tree |= grown
        if not tree & set(table) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid in tree & set(_processes()):
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while tree & set(_processes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return tree


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --- the wrapper ----------------------------------------------------------------------------------------------------


def wait_for_runs(port: int, since: datetime.datetime, poll_s: float = 0.5) -> list[RunState]:
    """
    :param port: the local SuperLink's port
    :param since: runs pending at or after this time are this command's
    :param poll_s: seconds between looks
    :return: those runs, once every one of them has finished (or the SuperLink went away)
    """
    announced: set[int] = set()
    while True:
        try:
            runs = [run for run in list_runs(port) if run.pending_at is not None and run.pending_at >= since]
        except Exception as error:  # the SuperLink went away
            _say(f"the local SuperLink stopped answering ({type(error).__name__}); no more run status")
            return []
        unfinished = [run for run in runs if not run.finished]
        if not unfinished:
            return runs
        for run in unfinished:
            if run.run_id not in announced:
                announced.add(run.run_id)
                follow = f"{PORT_VARIABLE}={port} flwr log {run.run_id}"
                _say(f"waiting for run {run.run_id} ({run.status}); follow it with `{follow}`")
        time.sleep(poll_s)


def run_command(command: list[str], stop_timeout: float = 20.0) -> int:
    """
    Run ``command`` (e.g. ``flwr run flower_app local-sim --stream``), wait for the runs it submitted to the local
    SuperLink, stop that SuperLink if the command started it, and report.

    :param command: the command and its arguments
    :param stop_timeout: seconds the SuperLink gets to shut down after SIGTERM before its processes are killed
    :return: the exit code: the command's if it failed, 1 if a run it submitted did not complete, 130 if interrupted,
        else 0
    """
    environ = dict(os.environ)
    if PORT_VARIABLE not in environ:  # a SuperLink of its own (see the module's docstring)
        environ[PORT_VARIABLE] = str(_free_port())
        environ[CONTROL_PORT_VARIABLE] = str(_free_port())
    port = local_superlink_port(environ)
    was_up = superlink_is_up(port)
    before = local_superlink_pids(port)
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    interrupted = False
    runs: list[RunState] = []
    process = None
    sigterm = sigterm_as_interrupt().__enter__()
    try:
        try:
            process = subprocess.Popen(command, env=environ)
        except OSError as error:
            _say(f"cannot run {command[0]!r}: {error}")
            code = 127
        else:
            code = process.wait()
            if superlink_is_up(port):
                runs = wait_for_runs(port, since)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (sigterm_as_interrupt)
        interrupted = True
        code = 130
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        sigterm.__exit__()
        started = local_superlink_pids(port) - before
        if started:
            keyboard = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave half a teardown
            try:
                stop_process_trees(started, stop_timeout)
            finally:
                signal.signal(signal.SIGINT, keyboard)
            pids = ", ".join(map(str, sorted(started)))
            _say(f"stopped the local SuperLink this command started on 127.0.0.1:{port} (pid {pids})")
        elif was_up:
            _say(f"the local SuperLink on 127.0.0.1:{port} was running before this command: left running")
    for run in runs:
        _say(f"run {run.run_id} ({run.app}): {run.status}" + (f": {run.details}" if run.details else ""))
    if interrupted:
        _say("interrupted: the run was stopped with the local SuperLink" if not was_up else "interrupted")
        return code
    if code != 0:
        _say(f"{command[0]} exited with code {code}")
        return code
    failed = [run for run in runs if not run.completed]
    if failed:
        _say(f"{len(failed)} of {len(runs)} run(s) did not complete")
        return 1
    return 0


def stop_local_superlink(stop_timeout: float = 20.0) -> int:
    """
    Stop flwr's managed local SuperLink (and everything it spawned), whoever started it.

    :param stop_timeout: seconds it gets to shut down after SIGTERM
    :return: 0
    """
    port = local_superlink_port()
    pids = local_superlink_pids(port)
    if not pids:
        _say(f"no local SuperLink runs on 127.0.0.1:{port}")
        return 0
    stop_process_trees(pids, stop_timeout)
    _say(f"stopped the local SuperLink on 127.0.0.1:{port} (pid {', '.join(map(str, sorted(pids)))})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """
    :param argv: arguments (default ``sys.argv[1:]``)
    :return: the exit code
    """
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--stop", action="store_true", help="only stop the local SuperLink on its port (no command)")
    parser.add_argument(
        "--stop-timeout", type=float, default=20.0, help="seconds the SuperLink gets after SIGTERM before SIGKILL"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, e.g. flwr run flower_app local-sim --stream")
    args = parser.parse_args(argv)
    if args.stop:
        if args.command:
            parser.error("--stop takes no command")
        return stop_local_superlink(args.stop_timeout)
    if not args.command:
        parser.error("give a command (e.g. flwr run flower_app local-sim --stream) or --stop")
    return run_command(args.command, args.stop_timeout)


if __name__ == "__main__":
    sys.exit(main())
