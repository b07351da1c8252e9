"""
Checks on the vectors agents send to a server (anchor gradients, parameter changes).

A distributed server cannot trust its agents' replies: a buggy or faulty agent may send
the wrong number of values, NaN/inf, or an absurdly large vector that would wreck the
average. These checks run on the server before anything reaches
:mod:`sb3_fedpg.common.fedmath`; a rejected reply is left out of the round.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def update_problem(vector: Any, n_params: int, max_norm: float | None = None) -> str | None:
    """
    Say what is wrong with an agent's vector, if anything.

    :param vector: the received vector (anything ``np.asarray`` accepts)
    :param n_params: the expected length (size of the federated parameter vector)
    :param max_norm: largest acceptable Euclidean norm (``None``: no limit)
    :return: ``None`` when the vector is acceptable, else a one-line reason
    """
    try:
        array = np.asarray(vector)
    except Exception as error:  # a reply that is not even array-like
        return f"not an array ({type(error).__name__}: {error})"
    if array.shape != (n_params,):
        return f"wrong shape {array.shape}, expected ({n_params},)"
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        return f"wrong dtype {array.dtype}, expected a real number type"
    n_bad = int(np.count_nonzero(~np.isfinite(array)))
    if n_bad:
        return f"{n_bad} non-finite value(s) (NaN/inf)"
    if max_norm is not None:
        norm = float(np.linalg.norm(array.astype(np.float64)))
        if norm > max_norm:
            return f"norm {norm:.3g} exceeds the limit {max_norm:.3g}"
    return None
