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


#: Largest agent id a reply may claim (ids are partition indices).
MAX_AGENT_ID = 2**31 - 1


def agent_id_problem(value: Any) -> str | None:
    """
    :param value: the ``agent`` a reply's metrics claim
    :return: ``None`` for an integer id in ``[0, 2**31)`` (an integral float is accepted), else a one-line reason
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return f"metric 'agent' is {type(value).__name__} {value!r}, not an agent id"
    if not np.isfinite(value) or value != int(value) or not 0 <= value <= MAX_AGENT_ID:
        return f"metric 'agent' = {value!r} is not an agent id (an integer in [0, 2**31))"
    return None


def clean_metrics(record: Any) -> tuple[dict[str, float | int], list[str]]:
    """
    Keep the usable entries of an agent's reply metrics, say what was dropped.

    Every value must be a finite real number (lists, strings, NaN/inf are dropped); ``agent`` must be an agent id
    (see :func:`agent_id_problem`); ``ep_rew_mean`` is kept only with a valid ``agent`` (it is logged per agent).

    :param record: the reply's metrics (a Flower ``MetricRecord`` or any mapping; anything else is dropped whole)
    :return: the clean metrics and one line per dropped entry
    """
    try:
        items = list(record.items())
    except Exception as error:  # not a mapping at all
        return {}, [f"metrics are not a mapping ({type(error).__name__})"]
    clean: dict[str, float | int] = {}
    dropped: list[str] = []
    for key, value in items:
        if not isinstance(key, str):
            dropped.append(f"metric key {key!r} is not a string")
            continue
        if key == "agent":
            problem = agent_id_problem(value)
            if problem is None:
                clean[key] = int(value)
            else:
                dropped.append(problem)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            dropped.append(f"metric {key!r} is {type(value).__name__}, not a number")
        elif not np.isfinite(value):
            dropped.append(f"metric {key!r} = {value!r} is not finite")
        else:
            clean[key] = float(value) if isinstance(value, float | np.floating) else int(value)
    if "ep_rew_mean" in clean and "agent" not in clean:
        del clean["ep_rew_mean"]
        dropped.append("metric 'ep_rew_mean' without a valid 'agent'")
    return clean, dropped


def relative_norm_outliers(vectors: dict[Any, Any], max_ratio: float | None) -> dict[Any, str]:
    """
    The replies whose norm exceeds ``max_ratio`` times the median norm of the phase's replies.

    An absolute bound cannot tell an honest update (norm ~0.2) from an attack just under the bound (1e6); this one
    scales with what the agents actually send. It needs at least 3 replies (with 2 the median is their mean, and no
    rule can tell which one is honest) and a non-zero median.

    :param vectors: key (node) → vector, already checked by :func:`update_problem`
    :param max_ratio: the factor ``k`` (``None``: no relative bound)
    :return: key → reason, for the rejected ones
    """
    if max_ratio is None or len(vectors) < 3:
        return {}
    norms = {key: float(np.linalg.norm(np.asarray(v, dtype=np.float64))) for key, v in vectors.items()}
    median = float(np.median(list(norms.values())))
    if not median > 0:
        return {}
    limit = max_ratio * median
    return {
        key: f"norm {norm:.3g} exceeds {max_ratio:g} x the median norm {median:.3g} of this phase's replies"
        for key, norm in norms.items()
        if norm > limit
    }
