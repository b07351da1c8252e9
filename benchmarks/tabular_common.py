"""Shared plumbing of the tabular benchmarks: argument parsing, thread limits, JSON + PNG output."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

# one BLAS/torch thread: the batched solves are small, and threads only add hand-off cost
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sb3_fedpg.common.cli import ArgumentParser  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    """
    Common command line: ``--quick`` and ``--out-dir``.

    :param description: the benchmark's one-line description
    :return: the parser, to which the benchmark adds its own options
    """
    p = ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds), not the reported sizes")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where <name>.json and <name>.png go")
    return p


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def save(name: str, data: dict, figure: plt.Figure, out_dir: Path) -> tuple[Path, Path]:
    """
    Write ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.png``.

    :param name: benchmark name
    :param data: results (NumPy values are converted)
    :param figure: the matplotlib figure
    :param out_dir: output folder (created if missing)
    :return: the two paths
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{name}.json", out_dir / f"{name}.png"
    json_path.write_text(json.dumps(_jsonable(data), indent=1))
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return json_path, png_path


def positive(values: np.ndarray, floor: float = 1e-16) -> np.ndarray:
    """
    Clip gaps for log axes (exact gaps can dip to ``-1e-15`` by round-off).

    :param values: gaps
    :param floor: smallest plotted value
    :return: clipped copy
    """
    return np.maximum(np.asarray(values, dtype=np.float64), floor)
