"""
Every code block of README.md and docs/ runs as written.

Conventions (also in docs/architecture.md, "Documentation"):

- ```` ```bash ```` and ```` ```python ```` blocks run, in page order, in a scratch copy of the repository (what a
  user following the page from a fresh clone does). Python blocks of one page share one interpreter and namespace,
  like a notebook; bash blocks run with ``bash -euo pipefail``.
- ```` ```toml ````, ```` ```yaml ```` and ```` ```json ```` blocks must parse; ```` ```text ```` and
  ```` ```console ```` blocks show output and do not run. Any other fence (or none) fails the test.
- An HTML comment on the line before a block changes how it runs:
  ``<!-- docs-test: slow -->`` runs it only in the slow suite (``pytest -m slow``);
  ``<!-- docs-test: ci -->`` marks the README's set-up commands, which ``.ci/run`` itself runs.
- A block must leave no process behind: every process that inherited the block's marker environment variable and
  is still alive afterwards fails the test (and is killed).
- A page whose bash blocks run ``pip install`` gets its own virtual environment (with pip) layered over the test
  environment's packages, with the scratch copy installed as the page's reader would have it, so
  ``pip install -e ".[extra]"`` really runs — resolving against what is installed — without touching the
  environment running the tests.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = {"bash", "python"}
PARSE = {"toml", "yaml", "json"}
SHOW = {"text", "console"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", flags=re.M | re.S)
MARK = re.compile(r"<!--\s*docs-test:\s*(?P<mark>[\w-]+)\s*-->\s*$")
BLOCK_TIMEOUT_S = {"default": 600, "slow": 3600}

# A Python process that executes blocks sent on stdin in one shared namespace (like a notebook).
DRIVER = r"""
import json, sys, traceback
namespace = {"__name__": "__main__"}
for line in sys.stdin:
    request = json.loads(line)
    try:
        exec(compile(request["code"], request["name"], "exec"), namespace)
        reply = {"ok": True}
    except BaseException:
        reply = {"ok": False, "error": traceback.format_exc()}
    sys.stdout.flush(); sys.stderr.flush()
    print("\n@@DOCS-TEST@@" + json.dumps(reply), flush=True)
"""


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    mark: str | None

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[pathlib.Path]:
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "results" not in p.relative_to(ROOT / "docs").parts)
    return [ROOT / "README.md", *docs]


def blocks_of(path: pathlib.Path) -> list[Block]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        indent = match["indent"]
        body = "".join(row[len(indent) :] if row.startswith(indent) else row for row in match["body"].splitlines(True))
        lang = match["lang"].strip().split()[0] if match["lang"].strip() else ""
        found.append(Block(str(path.relative_to(ROOT)), line, lang, body, mark["mark"] if mark else None))
    return found


def scratch_copy(destination: pathlib.Path) -> pathlib.Path:
    """A copy of the checkout's tracked and untracked-but-not-ignored files (a fresh clone of the working tree)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        relative = raw.decode()
        source, target = ROOT / relative, destination / relative
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return destination


def survivors(token: str, exclude: set[int]) -> list[tuple[int, str]]:
    """:return: (pid, command line) of live processes whose environment carries ``token``"""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude or int(entry.name) == os.getpid():
            continue
        try:
            if token.encode() not in (entry / "environ").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                continue  # a zombie holds no resources; its parent reaps it
            found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()))
        except OSError:
            continue
    return found


def overlay_venv(path: pathlib.Path) -> pathlib.Path:
    """
    A virtual environment with pip whose ``sys.path`` also holds this interpreter's site-packages (a ``.pth`` line,
    not a site dir: the outer editable install of sb3-fedpg is not loaded, the scratch copy's ``pip install -e`` is).

    :return: its ``bin`` folder
    """
    import site
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    purelib = subprocess.run(
        [str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    outer = [p for p in dict.fromkeys([sysconfig.get_paths()["purelib"], *site.getsitepackages()]) if os.path.isdir(p)]
    (pathlib.Path(purelib) / "_outer_environment.pth").write_text("\n".join(outer) + "\n")
    return path / "bin"


class PageRunner:
    """Runs one page's blocks in order in a scratch copy; checks that each leaves no process behind."""

    def __init__(self, workdir: pathlib.Path, slow: bool, blocks: list[Block]) -> None:
        self.repo = scratch_copy(workdir / "repo")
        self.home = workdir / "home"
        self.home.mkdir()
        self.slow = slow
        self.token = f"DOCS_TEST_{uuid.uuid4().hex}"
        self.env = {
            **os.environ,
            "HOME": str(self.home),  # a new user's home: ~/.flwr, ~/.config land here
            "MPLBACKEND": "Agg",
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "FLWR_TELEMETRY_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
            self.token: "1",
        }
        self.env.pop("PYTEST_CURRENT_TEST", None)
        self.interpreter = sys.executable
        if any(b.lang == "bash" and "pip install" in b.code for b in blocks):
            bin_dir = overlay_venv(workdir / "venv")
            # the page's reader has installed the package already (getting started): blocks before its own install run
            subprocess.run(
                [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "-e", str(self.repo)],
                check=True,
                capture_output=True,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )
            self.env["PATH"] = f"{bin_dir}{os.pathsep}{self.env['PATH']}"
            self.env["VIRTUAL_ENV"] = str(bin_dir.parent)
            self.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
            self.interpreter = str(bin_dir / "python")
        self.python: subprocess.Popen | None = None
        self.timeout = BLOCK_TIMEOUT_S["slow" if slow else "default"]

    def run(self, block: Block) -> None:
        if block.lang == "bash":
            self._bash(block)
        elif block.lang == "python":
            self._python(block)
        self._no_survivors(block)

    def _bash(self, block: Block) -> None:
        try:
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block.code],
                cwd=self.repo,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as error:
            pytest.fail(f"{block.name}: bash block still running after {self.timeout} s\n{error.stdout}\n{error.stderr}")
        if result.returncode != 0:
            pytest.fail(
                f"{block.name}: bash block exited {result.returncode}\n--- block\n{block.code}"
                f"--- stdout (tail)\n{result.stdout[-4000:]}\n--- stderr (tail)\n{result.stderr[-4000:]}"
            )

    def _python(self, block: Block) -> None:
        if self.python is None:
            self.python = subprocess.Popen(
                [self.interpreter, "-u", "-c", DRIVER],
                cwd=self.repo,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        assert self.python.stdin is not None and self.python.stdout is not None
        self.python.stdin.write(json.dumps({"code": block.code, "name": block.name}) + "\n")
        self.python.stdin.flush()
        deadline, output = time.monotonic() + self.timeout, []
        while True:
            line = self.python.stdout.readline()
            if not line:
                pytest.fail(f"{block.name}: the Python process died\n{''.join(output)[-4000:]}")
            if line.startswith("@@DOCS-TEST@@"):
                reply = json.loads(line.removeprefix("@@DOCS-TEST@@"))
                break
            output.append(line)
            if time.monotonic() > deadline:
                pytest.fail(f"{block.name}: python block still running after {self.timeout} s")
        if not reply["ok"]:
            pytest.fail(f"{block.name}: python block failed\n--- output (tail)\n{''.join(output)[-4000:]}\n{reply['error']}")

    def _no_survivors(self, block: Block) -> None:
        exclude = {self.python.pid} if self.python is not None else set()
        left = survivors(self.token, exclude)
        for _ in range(20):  # processes a block stopped may take a moment to exit
            if not left:
                return
            time.sleep(0.25)
            left = survivors(self.token, exclude)
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        pytest.fail(f"{block.name}: the block left processes running:\n" + "\n".join(f"  {p} {c}" for p, c in left))

    def close(self) -> None:
        if self.python is not None:
            self.python.kill()
            self.python.wait()
            self.python = None
        for pid, _ in survivors(self.token, set()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def check_syntax(block: Block) -> None:
    if block.lang == "toml":
        tomllib.loads(block.code)
    elif block.lang == "yaml":
        yaml.safe_load(block.code)
    elif block.lang == "json":
        json.loads(block.code)


ALL_PAGES = pages()
PAGE_IDS = [str(p.relative_to(ROOT)) for p in ALL_PAGES]
SLOW_PAGES = [p for p in ALL_PAGES if any(b.mark == "slow" and b.lang in RUN for b in blocks_of(p))]


def test_every_block_has_a_known_fence_and_mark():
    problems = []
    for page in ALL_PAGES:
        for block in blocks_of(page):
            if block.lang not in RUN | PARSE | SHOW:
                problems.append(f"{block.name}: fence {block.lang or '(none)'!r}: use one of {sorted(RUN | PARSE | SHOW)}")
            if block.mark not in {None, "slow", "ci"}:
                problems.append(f"{block.name}: unknown mark {block.mark!r}")
            if block.mark == "ci" and block.page != "README.md":
                problems.append(f"{block.name}: only the README's set-up commands are run by .ci/run")
            if block.lang == "bash" and re.search(r"<[a-z][\w-]*>", block.code):
                problems.append(f"{block.name}: a <placeholder> in a bash block cannot run verbatim")
    assert not problems, "\n".join(problems)


def test_ci_runs_the_readme_set_up_commands():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from readme_command import readme_command
    finally:
        sys.path.remove(str(ROOT / "tools"))
    (ci_block,) = [b for b in blocks_of(ROOT / "README.md") if b.mark == "ci"]
    commands = [line for line in ci_block.code.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands == [readme_command("demo"), readme_command("tests")]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m venv" in ci and "readme_command.py tests" in ci and "readme_command.py demo" in ci


@pytest.mark.parametrize("page", ALL_PAGES, ids=PAGE_IDS)
def test_parsed_blocks_parse(page):
    for block in blocks_of(page):
        if block.lang in PARSE:
            try:
                check_syntax(block)
            except Exception as error:  # any parser's error: report which block
                pytest.fail(f"{block.name}: {block.lang} block does not parse: {error}")


def _run_page(page: pathlib.Path, tmp_path: pathlib.Path, slow: bool) -> int:
    blocks = [b for b in blocks_of(page) if b.lang in RUN and b.mark != "ci" and (slow or b.mark != "slow")]
    if not blocks:
        return 0
    runner = PageRunner(tmp_path, slow=slow, blocks=blocks)
    try:
        for block in blocks:
            runner.run(block)
    finally:
        runner.close()
    return len(blocks)


@pytest.mark.parametrize("page", ALL_PAGES, ids=PAGE_IDS)
def test_page_blocks_run(page, tmp_path):
    _run_page(page, tmp_path, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW_PAGES, ids=[str(p.relative_to(ROOT)) for p in SLOW_PAGES])
def test_page_blocks_run_with_slow_ones(page, tmp_path):
    assert _run_page(page, tmp_path, slow=True) > 0
