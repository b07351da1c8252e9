"""Every command line answers --help in plain text and --version with the package version."""

import pathlib
import re
import subprocess
import sys

import pytest

from sb3_fedpg import __version__
from sb3_fedpg.common.cli import ArgumentParser, plain_text

ROOT = pathlib.Path(__file__).resolve().parents[2]
MARKUP = re.compile(r"``|:(?:param|return|mod|class|func|meth|attr|data)\b|\.\. [\w-]+::")
LIBRARY_CLIS = [
    "sb3_fedpg.demo",
    "sb3_fedpg.zoo.train",
    "sb3_fedpg.zoo.enjoy",
    "sb3_fedpg.flower.deploy",
    "sb3_fedpg.flower.worker",
    "sb3_fedpg.flower.local_sim",
]


def test_plain_text_removes_sphinx_markup():
    doc = """
    Train :class:`~sb3_fedpg.FederatedPG` (see :mod:`sb3_fedpg.zoo`) with ``-n 100``.

    .. code-block:: bash

        python -m x --flag

    :param env: the env
    """
    text = plain_text(doc)
    assert not MARKUP.search(text), text
    assert "Train FederatedPG (see sb3_fedpg.zoo) with -n 100." in text
    assert "python -m x --flag" in text and "env: the env" in text
    assert plain_text(None) == ""


def test_parser_help_and_version(capsys):
    parser = ArgumentParser(description="Uses ``x``.")
    parser.add_argument("--n", help="a :class:`Thing`")
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--version"])
    assert stop.value.code == 0 and __version__ in capsys.readouterr().out
    help_text = parser.format_help()
    assert "Uses x." in help_text and "a Thing" in help_text and not MARKUP.search(help_text)


def test_no_entry_point_builds_a_raw_argparse_parser():
    # one parser class for every command line: plain-text help and --version everywhere
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("sb3_fedpg", "benchmarks", "tools")
        for path in (ROOT / folder).rglob("*.py")
        if "argparse.ArgumentParser(" in path.read_text() and path.name != "cli.py"
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("module", LIBRARY_CLIS)
def test_library_command_lines(module):
    env_help = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert env_help.returncode == 0, env_help.stderr
    assert f"python -m {module}" in env_help.stdout and not MARKUP.search(env_help.stdout), env_help.stdout
    version = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and __version__ in version.stdout, version.stdout + version.stderr
