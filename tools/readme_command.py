"""
Print one of the README's two set-up commands, so that CI runs exactly what the README says.

``python tools/readme_command.py demo``  -> the "install and run the main job" line
``python tools/readme_command.py tests`` -> the "install and run the tests" line

The README's first ``bash`` block holds both, each on the line after a comment
starting ``# 1.`` (demo) or ``# 2.`` (tests).
"""

from __future__ import annotations

import pathlib
import re
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
MARKERS = {"demo": "# 1.", "tests": "# 2."}


def readme_command(which: str, readme: pathlib.Path = README) -> str:
    """
    The README command named ``which``.

    :param which: ``"demo"`` or ``"tests"``
    :param readme: the README file to read
    :return: the command line, as written in the README
    """
    if which not in MARKERS:
        raise ValueError(f"unknown command {which!r}: use one of {sorted(MARKERS)}")
    match = re.search(r"```bash\n(.*?)```", readme.read_text(), flags=re.S)
    if match is None:
        raise ValueError(f"{readme} has no ```bash block with the set-up commands")
    lines = match.group(1).splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.strip().startswith(MARKERS[which]):
            return lines[i + 1].strip()
    raise ValueError(f"{readme}'s first bash block has no line starting {MARKERS[which]!r}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/readme_command.py {demo,tests}")
    print(readme_command(sys.argv[1]))
