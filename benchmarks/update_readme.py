"""
Copy the generated result tables into README.md.

Each benchmark writes ``benchmarks/results/<name>.md``; README.md holds blocks
``<!-- results:<name> -->`` ... ``<!-- /results:<name> -->`` that this script refills,
so no number in the README is typed by hand. Run after any benchmark:
``python benchmarks/update_readme.py``.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def refill(text: str, results: pathlib.Path = RESULTS) -> str:
    def block(match: re.Match) -> str:
        name = match.group(1)
        table = (results / f"{name}.md").read_text().strip()
        return f"<!-- results:{name} -->\n{table}\n<!-- /results:{name} -->"

    return re.sub(r"<!-- results:([\w-]+) -->.*?<!-- /results:\1 -->", block, text, flags=re.S)


def main() -> None:
    readme = ROOT / "README.md"
    readme.write_text(refill(readme.read_text()))


if __name__ == "__main__":
    main()
