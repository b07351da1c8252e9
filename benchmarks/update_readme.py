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
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: Tables written by running the test suite itself (``tools/time_setup.py`` times the README's test command): a
#: fresh clone must pass its tests before they exist, so their blocks stay empty until the tool has run.
MADE_BY_RUNNING_THE_TESTS = frozenset({"setup_times"})


def refill(text: str, results: pathlib.Path = RESULTS) -> str:
    """
    :param text: a document
    :param results: the folder of the generated ``<name>.md`` tables
    :return: the document with every results block refilled
    :raises FileNotFoundError: a block names a table that does not exist (the message says which), except the
        tables made by running the test suite (:data:`MADE_BY_RUNNING_THE_TESTS`), whose blocks stay empty
    """

    def block(match: re.Match) -> str:
        name = match.group(1)
        table_file = results / f"{name}.md"
        if not table_file.is_file():
            if name in MADE_BY_RUNNING_THE_TESTS:
                return f"<!-- results:{name} -->\n<!-- /results:{name} -->"
            raise FileNotFoundError(
                f"the block <!-- results:{name} --> needs {table_file}, which does not exist: "
                f"run the benchmark or tool that writes it first"
            )
        table = table_file.read_text().strip()
        return f"<!-- results:{name} -->\n{table}\n<!-- /results:{name} -->"

    return re.sub(r"<!-- results:([\w-]+) -->.*?<!-- /results:\1 -->", block, text, flags=re.S)


def main() -> None:
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = document.read_text()
        if "<!-- results:" in text:
            try:
                document.write_text(refill(text))
            except FileNotFoundError as error:
                sys.exit(f"update_readme: {document.relative_to(ROOT)}: {error}")


if __name__ == "__main__":
    from sb3_fedpg.common.cli import ArgumentParser

    ArgumentParser(description=__doc__).parse_args()  # --help, --version; no options
    main()
