"""
Copy the generated result tables into README.md and docs/**/*.md.

Each benchmark writes ``benchmarks/results/<name>.md``; the documents hold blocks
``<!-- results:<name> -->`` ... ``<!-- /results:<name> -->`` that this script refills,
so no number in them is typed by hand. Run after any benchmark:
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
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = document.read_text()
        if "<!-- results:" in text:
            document.write_text(refill(text))


if __name__ == "__main__":
    main()
