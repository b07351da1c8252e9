"""
The one writer of a study's outputs: ``<name>.json``, ``<name>.png``, ``<name>.md`` (and further figures and tables),
and the docs pages' tables.

Writing into the committed results folder also refills every ``<!-- results:<name> -->`` block of the README and
the docs (``benchmarks/update_readme.py``), so the pages never fall behind the results.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
from collections.abc import Sequence

from harness.keys import jsonable
from harness.spec import Report

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1]
RESULTS = BENCHMARKS / "results"


def table(rows: Sequence[Sequence[object]], align: str) -> list[str]:
    """
    A Markdown table.

    :param rows: the header row, then the body rows (cells written with ``str``)
    :param align: one letter per column, ``l`` (``---``) or ``r`` (``---:``)
    :return: its lines
    """
    lines = ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [lines[0], "|" + "".join("---:|" if a == "r" else "---|" for a in align), *lines[1:]]


def write(name: str, report: Report, out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """
    Write a report's files (figures closed afterwards).

    :param name: the study's name (the files' stem)
    :param report: what to write
    :param out_dir: the results folder (created if missing)
    :return: the files written
    """
    import matplotlib.pyplot as plt

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(report.data, finite=True), indent=report.indent) + ("\n" if report.final_newline else "")
    written = [out_dir / f"{name}.json"]
    written[0].write_text(text)
    figures = {f"{name}.png": report.figure} if report.figure is not None else {}
    for file_name, figure in {**figures, **report.extra_figures}.items():
        figure.tight_layout(rect=report.layout_rect)
        figure.savefig(out_dir / file_name, dpi=report.dpi)
        plt.close(figure)
        written.append(out_dir / file_name)
    markdown = {f"{name}.md": report.markdown} if report.markdown is not None else {}
    for file_name, text in {**markdown, **report.extra_markdown}.items():
        written.append(out_dir / file_name)
        written[-1].write_text(text)
    return written


def refill_docs() -> None:
    """Copy the committed results' tables into the README and the docs (``python benchmarks/update_readme.py``)."""
    spec = importlib.util.spec_from_file_location("update_readme", BENCHMARKS / "update_readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()
