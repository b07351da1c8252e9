"""
Time the README's two set-up commands as a new user meets them: a fresh clone, a fresh virtual environment.

    python tools/time_setup.py            # clones HEAD into a temporary folder; ~12 min on 2 cores
    python benchmarks/update_readme.py    # copies the table into README.md

Each command is ``<install> && <run>``; the two halves are timed separately (wall clock). Writes
``benchmarks/results/setup_times.{json,md}``. The pip cache is the user's (a second install on the same machine
downloads nothing, as on a CI runner with a warm cache); say so when quoting the numbers.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from readme_command import readme_command  # noqa: E402

from sb3_fedpg.common.cli import ArgumentParser  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def timed(command: str, cwd: pathlib.Path, env: dict[str, str]) -> float:
    """:return: wall-clock seconds of ``command`` run by bash in ``cwd`` (raises if it fails)"""
    start = time.perf_counter()
    subprocess.run(["bash", "-c", command], cwd=cwd, env=env, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS / "setup_times")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        clone, venv = pathlib.Path(tmp) / "clone", pathlib.Path(tmp) / "venv"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True).stdout
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
        env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
        rows = []
        for which, label in [("demo", "1. main job (demo)"), ("tests", "2. tests")]:
            command = readme_command(which)
            install, run = (part.strip() for part in command.split("&&", 1))
            rows.append(
                {
                    "command": label,
                    "install_s": timed(install, clone, env),
                    "run_s": timed(run, clone, env),
                }
            )
            print(rows[-1], flush=True)
    result = {
        "rows": rows,
        "commit": commit.strip(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "load_average_1min_at_end": os.getloadavg()[0],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| command | install | run |", "|---|---:|---:|"]
    lines += [f"| {r['command']} | {r['install_s']:.0f} s | {r['run_s'] / 60:.1f} min |" for r in rows]
    lines += [
        "",
        f"Fresh clone of {result['commit']} and fresh virtual environment, {result['machine']['cpus']} cores, "
        f"Python {result['machine']['python']}, warm pip cache; 1-minute load average "
        f"{result['load_average_1min_at_end']:.1f} at the end.",
    ]
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
