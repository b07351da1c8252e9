"""The Flower overhead benchmark's CPU meter counts a whole process tree, including children that already ended."""

import importlib
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A parent that burns CPU itself, then in a child it waits for (reaped: counted in the parent's children times), then
# starts a grandchild that is still burning when measured (counted as a live process of the tree).
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"
TREE = (
    BURN.format(s=0.3)
    + "import subprocess, sys\n"
    + f"subprocess.run([sys.executable, '-c', {BURN.format(s=0.3)!r}])\n"
    + f"p = subprocess.Popen([sys.executable, '-c', {BURN.format(s=30)!r}])\n"
    + "print('ready', flush=True)\np.wait()\n"
)


def test_tree_cpu_seconds_counts_children_and_grandchildren(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("flower_overhead", None)
    meter = importlib.import_module("flower_overhead")
    process = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # let the grandchild burn a little
        (grandchild,) = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()

        def ticks(pid, first, last):
            return sum(int(x) for x in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[first:last])

        total = meter.tree_cpu_seconds([process.pid])
        parent_and_reaped = ticks(process.pid, 11, 15) / meter.CLOCK_TICKS  # own + waited-for children
        live = ticks(grandchild, 11, 13) / meter.CLOCK_TICKS
        assert parent_and_reaped >= 0.55 and live > 0.02
        assert total >= parent_and_reaped + live - 0.02  # the live grandchild is counted too
        assert meter.tree_cpu_seconds([]) == 0.0
    finally:
        for child in subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split():
            subprocess.run(["kill", child])
        process.kill()
        process.wait()
