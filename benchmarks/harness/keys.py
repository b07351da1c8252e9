"""
Cache keys: a run is found again by a hash of its full configuration.

A run's key hashes the name of the function that computes it and every argument it is called with, written as
canonical JSON (sorted keys, no spaces, NumPy values as Python values). Nothing else goes in: not the library version
(recorded beside the result, :mod:`harness.cache`), not where or when it ran. Two runs with equal keys compute the same
thing; changing anything the result depends on (a budget, a seed, a hyperparameter) gives a new key, so a stale result
is never reported for a new configuration.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

#: Hex digits of the SHA-256 kept in a key (48 bits: no collision in any study's few thousand runs).
KEY_LENGTH = 12


def jsonable(value: Any, finite: bool = False) -> Any:
    """
    Plain JSON values for NumPy arrays and scalars, tuples and non-string keys.

    :param value: any nesting of dicts, lists, tuples, NumPy arrays and scalars
    :param finite: write ``NaN`` as ``None`` and infinities as ``"inf"`` / ``"-inf"`` (strict JSON, what the results
        files hold); otherwise they stay floats (Python's JSON writes and reads them back exactly)
    :return: the same data made of ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v, finite) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, finite) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), finite)
    if isinstance(value, np.generic):
        value = value.item()
    if finite and isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def canonical(value: Any) -> str:
    """
    :param value: a configuration
    :return: its canonical JSON text (sorted keys, compact separators): equal configurations give equal text
    """
    return json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"))


def config_key(function: str, config: dict[str, Any]) -> str:
    """
    :param function: the qualified name of the function that computes the run (``stationary_error``)
    :param config: every keyword argument it is called with
    :return: the first :data:`KEY_LENGTH` hex digits of the SHA-256 of ``{"fn": function, "config": config}``
    """
    text = canonical({"fn": function, "config": config})
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]
