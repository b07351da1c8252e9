"""
SB3 parity: run Stable-Baselines3's own test modules with a federated algorithm where they run A2C and PPO.

SB3's test files are not part of this repository. Get them once (the tag that matches the installed SB3)::

    git clone --depth 1 --branch v2.9.2 https://github.com/DLR-RM/stable-baselines3 /tmp/sb3
    python tools/sb3_parity.py --sb3-tests /tmp/sb3/tests --label before

How a module is rewritten (only in a temporary copy; the source folder is never written to):

1. Each federated algorithm stands for its SB3 analogue: FederatedPG for ``A2C`` (SB3's plain actor-critic policy
   gradient), and so does FederatedA2C (FederatedPG with A2C's defaults); FederatedPPO for ``PPO``. The module's
   import line ``from stable_baselines3 import A2C, DQN, PPO, ...`` loses that name and gains
   ``from sb3_fedpg import FederatedPG as A2C``: every reference to the name —
   parametrisations, ``model_class == A2C`` branches, direct calls — now means the federated algorithm, with SB3's
   keyword arguments and the default of one agent on SB3's plain ``VecEnv``. ``--both-names`` puts the algorithm
   where both ``A2C`` and ``PPO`` stand (FederatedPG then meets PPO's own arguments, ``n_epochs=...``, and fails on
   them: a measure of the rewrite, not of the library).
2. A ``conftest.py`` written beside the copies keeps only the test items that use the substituted class: an item
   parametrised with algorithm classes is kept when one of them is the federated class (the SB3 algorithms a test is
   also parametrised over — DQN, SAC, the other of A2C/PPO — are deselected); an item without an algorithm parameter
   is kept when its function's source names a substituted name. Items marked ``expensive`` by SB3 are deselected.
3. Each module runs in its own pytest process (``-p no:cacheprovider``); every test gets ``--timeout`` seconds
   (``SIGALRM``), a module ``--module-timeout`` seconds; ``--skip`` drops modules or test-name substrings.

The result of a run goes under its ``--label`` into ``benchmarks/results/sb3_parity.json`` (other labels in the file
are kept, so a ``before`` run and an ``after`` run sit side by side) and the table is rewritten into
``benchmarks/results/sb3_parity.md`` from the JSON. This is a tool, not part of the test suite (it takes minutes).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from sb3_fedpg.common.cli import ArgumentParser

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: each federated algorithm → the SB3 name it stands for
ALGOS = {"FederatedPG": "A2C", "FederatedPPO": "PPO", "FederatedA2C": "A2C"}
#: SB3's modules that exercise the substituted names (the others test buffers, HER, off-policy only, ...).
DEFAULT_MODULES = [
    "test_buffers.py",
    "test_callbacks.py",
    "test_cnn.py",
    "test_custom_policy.py",
    "test_deterministic.py",
    "test_dict_env.py",
    "test_distributions.py",
    "test_gae.py",
    "test_identity.py",
    "test_logger.py",
    "test_predict.py",
    "test_run.py",
    "test_save_load.py",
    "test_sde.py",
    "test_spaces.py",
    "test_tensorboard.py",
    "test_train_eval_mode.py",
    "test_utils.py",
    "test_vec_envs.py",
    "test_vec_extract_dict_obs.py",
    "test_vec_monitor.py",
]

_IMPORT = re.compile(r"^from stable_baselines3 import ([^\n(]+)$", flags=re.M)

CONFTEST = '''
"""Written by tools/sb3_parity.py: keep the items that use the federated class, time each test, record results."""
import inspect
import json
import os
import re
import signal

import pytest
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_fedpg import {algo} as FEDERATED

TIMEOUT = int(os.environ["SB3_PARITY_TIMEOUT"])
SKIP = [s for s in os.environ.get("SB3_PARITY_SKIP", "").split(",") if s]
NAMES = re.compile(r"\\b({names})\\b")


def _algorithm_classes(value):
    items = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in items if isinstance(v, type) and issubclass(v, BaseAlgorithm)]


def _uses_federated(item):
    params = getattr(getattr(item, "callspec", None), "params", {{}})
    classes = [c for v in params.values() for c in _algorithm_classes(v)]
    if classes:
        return FEDERATED in classes
    try:
        return bool(NAMES.search(inspect.getsource(item.function)))
    except (OSError, TypeError):
        return False


def pytest_configure(config):
    config.addinivalue_line("markers", "expensive: SB3's slow tests (deselected here)")


def pytest_collectreport(report):
    if report.failed:  # the module cannot be imported (a missing optional dependency, ...): one failure, named
        crash = getattr(report.longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(report.longrepr)
        lines = [line for line in text.splitlines() if "Error" in line] or text.strip().splitlines() or [""]
        with open(os.environ["SB3_PARITY_OUT"], "a") as out:
            message = "collection: " + lines[-1][:300]
            record = {{"test": report.nodeid, "outcome": "error", "when": "collect", "message": message}}
            out.write(json.dumps(record) + "\\n")


def pytest_collection_modifyitems(config, items):
    kept, dropped = [], []
    for item in items:
        skip = any(s in item.nodeid for s in SKIP) or item.get_closest_marker("expensive") is not None
        (kept if _uses_federated(item) and not skip else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout(f"timed out after {{TIMEOUT}} s (tools/sb3_parity.py --timeout)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT)
    try:
        return (yield)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def pytest_runtest_logreport(report):
    if report.when != "call" and not (report.failed or report.skipped):
        return
    if report.when == "teardown" and report.skipped:
        return
    message = ""
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash is not None else str(report.longrepr)
        message = message.strip().splitlines()[0] if message.strip() else ""
    elif report.skipped and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2])
    outcome = report.outcome if report.when == "call" or report.outcome != "failed" else "error"
    with open(os.environ["SB3_PARITY_OUT"], "a") as out:
        record = {{"test": report.nodeid, "outcome": outcome, "when": report.when, "message": message[:300]}}
        out.write(json.dumps(record) + "\\n")
'''


def rewrite_module(source: str, algo: str, substituted: tuple[str, ...]) -> str:
    """
    :param source: an SB3 test module's text
    :param algo: the federated class to put where the ``substituted`` names stand
    :param substituted: SB3's algorithm names to replace (``A2C``, ``PPO``)
    :return: the module with those names imported as ``algo`` (unchanged if it imports none of them)
    """

    def replace(match: re.Match[str]) -> str:
        names = [n.strip() for n in match.group(1).split(",")]
        kept = [n for n in names if n not in substituted]
        taken = [n for n in names if n in substituted]
        lines = [f"from stable_baselines3 import {', '.join(kept)}"] if kept else []
        if taken:
            lines.append(f"from sb3_fedpg import {', '.join(f'{algo} as {n}' for n in taken)}")
        return "\n".join(lines)

    return _IMPORT.sub(replace, source, count=1)


def run_module(folder: pathlib.Path, module: str, args: Any) -> dict[str, Any]:
    """
    Run one rewritten module in its own pytest process.

    :param folder: the temporary test folder
    :param module: the module's file name
    :param args: the command-line arguments
    :return: ``{"passed", "failed", "skipped", "tests": [...], "seconds", "note"}``
    """
    out = folder / f"{module}.jsonl"
    env = {
        **os.environ,
        "SB3_PARITY_OUT": str(out),
        "SB3_PARITY_TIMEOUT": str(args.timeout),
        "SB3_PARITY_SKIP": ",".join(s for s in args.skip if not s.endswith(".py")),
        "PYTHONPATH": os.pathsep.join([str(args.library_root), os.environ.get("PYTHONPATH", "")]),
        "PYTHONHASHSEED": "0",
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x" if args.first_failure else "-q"]
    cmd += ["--rootdir", str(folder), "-W", "ignore::DeprecationWarning", str(folder / module)]
    start, note = time.perf_counter(), ""
    try:
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=args.module_timeout)
        if proc.returncode not in (0, 1, 5):  # 5: nothing collected
            note = (proc.stdout + proc.stderr).strip().splitlines()[-1:][0] if (proc.stdout + proc.stderr).strip() else ""
    except subprocess.TimeoutExpired:
        note = f"module timed out after {args.module_timeout} s: the tests after the last one recorded did not run"
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    counts = {k: sum(r["outcome"] == k for r in records) for k in ("passed", "failed", "skipped")}
    counts["failed"] += sum(r["outcome"] == "error" for r in records)
    return {**counts, "tests": records, "seconds": round(time.perf_counter() - start, 1), "note": note}


def library_version(root: pathlib.Path) -> str:
    """
    :param root: the checkout whose ``sb3_fedpg`` is tested
    :return: the commit it is at (``+dirty`` when its ``sb3_fedpg`` had changes)
    """
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "sb3_fedpg"], cwd=root, capture_output=True, text=True)
        return head.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def write_markdown(data: dict[str, Any], path: pathlib.Path) -> None:
    """
    :param data: the JSON's content (every label's runs)
    :param path: the Markdown file to write
    """
    lines = [
        "# SB3's own tests, with the federated algorithms where they run A2C and PPO",
        "",
        "Generated by `tools/sb3_parity.py` from `sb3_parity.json` (do not edit). Each cell: passed / failed / skipped.",
        "",
    ]
    for label, run in data["runs"].items():
        algos = list(run["algos"])
        lines += [f"## {label}", "", f"Library at `{run['library']}`, SB3 tests from `{run['sb3_tests']}`; "]
        lines[-1] += f"per-test timeout {run['timeout']} s; skipped: {', '.join(run['skip']) or 'nothing'}; "
        lines[-1] += "standing for: " + ", ".join(f"{a} for {'/'.join(n)}" for a, n in run["substituted"].items()) + "."
        lines += ["", "| module | " + " | ".join(algos) + " |", "|---" * (len(algos) + 1) + "|"]
        modules = sorted({m for a in algos for m in run["algos"][a]["modules"]})
        for module in modules:
            cells = []
            for a in algos:
                r = run["algos"][a]["modules"].get(module)
                cells.append("—" if r is None else f"{r['passed']} / {r['failed']} / {r['skipped']}")
            lines.append(f"| {module} | " + " | ".join(cells) + " |")
        totals = [run["algos"][a]["total"] for a in algos]
        bold = [f"**{t['passed']} / {t['failed']} / {t['skipped']}**" for t in totals]
        lines.append("| **total** | " + " | ".join(bold) + " |")
        for a in algos:
            failures = [
                (m, t)
                for m, r in run["algos"][a]["modules"].items()
                for t in r["tests"]
                if t["outcome"] in ("failed", "error")
            ]
            notes = [(m, r["note"]) for m, r in run["algos"][a]["modules"].items() if r["note"]]
            if failures or notes:
                lines += ["", f"### {label}: {a}'s failures", ""]
                lines += [f"- `{t['test'].split('/')[-1]}`: {t['message'].replace('|', '/')}" for _, t in failures]
                lines += [f"- `{m}`: {note}" for m, note in notes]
        lines.append("")
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--sb3-tests", type=pathlib.Path, help="SB3's tests/ folder (see above)")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=pathlib.Path,
        help="run nothing: copy the runs of these JSON files (written with --out elsewhere) into --out, rewrite the table",
    )
    parser.add_argument("--label", default="current", help="the name of this run in the JSON (e.g. before, after)")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--modules", nargs="+", default=DEFAULT_MODULES, help="SB3 test modules to run")
    parser.add_argument("--skip", nargs="*", default=[], help="modules (name.py) or test-name substrings to skip")
    parser.add_argument("--both-names", action="store_true", help="substitute both A2C and PPO (see above)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per test")
    parser.add_argument("--module-timeout", type=int, default=900, help="seconds per module")
    parser.add_argument("--first-failure", action="store_true", help="stop a module at its first failure")
    parser.add_argument(
        "--library-root",
        type=pathlib.Path,
        default=ROOT,
        help="the checkout whose sb3_fedpg is tested (default: this one; e.g. a clone at an earlier commit, for a before run)",
    )
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "sb3_parity.json")
    args = parser.parse_args(argv)
    if args.merge:
        data = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
        for path in args.merge:
            data["runs"].update(json.loads(path.read_text())["runs"])
        args.out.write_text(json.dumps(data, indent=1) + "\n")
        write_markdown(data, args.out.with_suffix(".md"))
        return
    if args.sb3_tests is None:
        parser.error("--sb3-tests is required (unless --merge)")
    modules = [m for m in args.modules if m not in args.skip and (args.sb3_tests / m).exists()]
    run: dict[str, Any] = {
        "library": library_version(args.library_root),
        "sb3_tests": str(args.sb3_tests),
        "timeout": args.timeout,
        "skip": args.skip,
        "substituted": {a: ["A2C", "PPO"] if args.both_names else [ALGOS[a]] for a in args.algos},
        "algos": {},
    }
    for algo in args.algos:
        with tempfile.TemporaryDirectory(prefix="sb3_parity_") as tmp:
            folder = pathlib.Path(tmp)
            for path in args.sb3_tests.iterdir():  # helpers the modules import sit beside them
                if path.suffix == ".py" and path.name.startswith("test_"):
                    continue
                if path.is_file():
                    shutil.copy(path, folder / path.name)
            names = tuple(run["substituted"][algo])
            (folder / "conftest.py").write_text(CONFTEST.format(algo=algo, names="|".join(names)))
            results: dict[str, Any] = {}
            for module in modules:
                (folder / module).write_text(rewrite_module((args.sb3_tests / module).read_text(), algo, names))
                results[module] = run_module(folder, module, args)
                r = results[module]
                counts = f"{r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped"
                print(f"{algo} {module}: {counts} ({r['seconds']} s)")
                if r["note"]:
                    print(f"  {r['note']}", flush=True)
        total = {k: sum(r[k] for r in results.values()) for k in ("passed", "failed", "skipped")}
        run["algos"][algo] = {"total": total, "modules": results}
        print(f"{algo}: {total}")
    data = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    data["runs"][args.label] = run
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    write_markdown(data, args.out.with_suffix(".md"))


if __name__ == "__main__":
    main()
