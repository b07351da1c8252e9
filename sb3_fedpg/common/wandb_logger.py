"""
Weights & Biases output for the SB3 logger.

``wandb.integration.sb3.WandbCallback`` logs no scalars by itself (only ``wandb.watch``
histograms; scalars need ``sync_tensorboard=True`` and a TensorBoard writer). This module
plugs W&B in where SB3's scalars are produced instead: :class:`WandbOutputFormat` is an
SB3 ``KVWriter``, so every ``logger.record(...)`` that reaches a dump — ``rollout/``,
``time/``, ``train/`` and ``fed/`` (drift, correction norm, bytes, per-agent
``fed/agent_<i>/ep_rew_mean``) — is sent with ``wandb.log``, next to stdout, CSV and
TensorBoard.

.. code-block:: python

    from sb3_fedpg import FederatedPG
    from sb3_fedpg.common.wandb_logger import configure_wandb_logger

    model = FederatedPG("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=8)
    logger = configure_wandb_logger(model, project="sb3-fedpg", folder="runs/cartpole")
    model.learn(100_000)
    logger.close()  # finishes the W&B run

``WANDB_MODE=offline`` works without network (``wandb sync`` uploads later).
"""

from __future__ import annotations

import glob
import json
import numbers
import os
import struct
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import KVWriter, Logger, configure

#: The x-axis of every W&B chart: SB3's ``step`` argument of ``logger.dump`` (``num_timesteps``).
STEP_METRIC = "global_step"


def _as_scalar(value: Any) -> float | int | None:
    """:return: ``value`` as a Python number, or ``None`` if it is not a scalar (strings, videos, figures...)"""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, numbers.Number) and not isinstance(value, complex):
        return value.item() if isinstance(value, np.generic) else value  # type: ignore[return-value]  # a real number
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.item()
    if isinstance(value, th.Tensor) and value.numel() == 1:
        return value.item()
    return None


class WandbOutputFormat(KVWriter):
    """
    SB3 logger output format that sends every scalar of a dump to W&B with ``wandb.log``.

    Keys are logged unchanged (``rollout/ep_rew_mean``, ``fed/agent_3/ep_rew_mean``...),
    plus ``global_step`` = the dump's ``step``, declared as the x-axis of every metric
    (so a ``learn(..., reset_num_timesteps=False)`` continuation or a second model writing
    to the same run never trips W&B's monotonic ``_step``). Keys recorded with
    ``exclude="wandb"`` are skipped; non-scalar values (strings, videos, figures) too.

    :param run: the W&B run to log to; ``None`` starts one with ``wandb.init(**init_kwargs)``
    :param init_kwargs: keyword arguments of ``wandb.init`` when ``run`` is ``None``
    """

    def __init__(self, run: Any | None = None, **init_kwargs: Any) -> None:
        import wandb

        self._owns_run = run is None
        self.run = wandb.init(**init_kwargs) if run is None else run
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC)

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        data: dict[str, float | int] = {}
        for key, value in key_values.items():
            excluded = key_excluded.get(key)
            if excluded is not None and "wandb" in excluded:
                continue
            scalar = _as_scalar(value)
            if scalar is not None:
                data[key] = scalar
        if data:
            self.run.log({**data, STEP_METRIC: int(step)})

    def close(self) -> None:
        # Only finish a run we started: a run passed in belongs to the caller.
        if self._owns_run:
            self.run.finish()


def model_config(model: BaseAlgorithm) -> dict[str, Any]:
    """
    The plain-valued hyperparameters of ``model`` (for the W&B run config).

    :param model: an SB3 algorithm
    :return: ``{"algo": class name, public attributes that are numbers, strings, booleans or None}``
    """
    config: dict[str, Any] = {"algo": type(model).__name__}
    for key, value in vars(model).items():
        if key.startswith("_") or key in ("verbose", "tensorboard_log"):
            continue
        if value is None or isinstance(value, bool | int | float | str):
            config[key] = value
    return config


def configure_wandb_logger(
    model_or_folder: BaseAlgorithm | str | os.PathLike | None = None,
    project: str | None = None,
    folder: str | os.PathLike | None = None,
    format_strings: Sequence[str] = ("stdout", "csv", "tensorboard"),
    name: str | None = None,
    config: dict[str, Any] | None = None,
    run: Any | None = None,
    **init_kwargs: Any,
) -> Logger:
    """
    An SB3 ``Logger`` writing to stdout/CSV/TensorBoard *and* W&B; set on the model if one is given.

    The W&B files go to ``<folder>/wandb/`` (``WANDB_MODE=offline``: ``<folder>/wandb/offline-run-*``).
    ``logger.close()`` finishes the W&B run started here.

    :param model_or_folder: a model (the logger is set on it with ``model.set_logger``, the W&B config
        gets its hyperparameters, the folder defaults to its ``tensorboard_log``), or the log folder
    :param project: W&B project name
    :param folder: log folder (CSV, TensorBoard events, W&B files); ``None``: SB3's default (a temp folder)
    :param format_strings: SB3 output formats besides W&B (``"stdout"``, ``"csv"``, ``"log"``, ``"json"``, ``"tensorboard"``)
    :param name: W&B run name
    :param config: W&B run config (merged over the model's hyperparameters)
    :param run: an existing W&B run to log to (not finished by ``logger.close()``); ``None`` starts one
    :param init_kwargs: more keyword arguments of ``wandb.init`` (``entity``, ``group``, ``tags``, ``mode``...)
    :return: the logger
    """
    model = model_or_folder if isinstance(model_or_folder, BaseAlgorithm) else None
    if not isinstance(model_or_folder, BaseAlgorithm) and model_or_folder is not None:  # (model is None)
        if folder is not None:
            raise ValueError("give the log folder once: as model_or_folder or as folder, not both.")
        folder = model_or_folder
    if folder is None and model is not None:
        folder = model.tensorboard_log
    logger = configure(None if folder is None else os.fspath(folder), list(format_strings))
    run_config = {**(model_config(model) if model is not None else {}), **(config or {})}
    if run is not None and init_kwargs:
        raise ValueError(f"wandb.init arguments {sorted(init_kwargs)} were given with an existing run; pass one or the other.")
    if run is None:
        init_kwargs = {"project": project, "name": name, "config": run_config, "dir": logger.get_dir(), **init_kwargs}
    logger.output_formats.append(WandbOutputFormat(run, **init_kwargs))
    if model is not None:
        model.set_logger(logger)
    return logger


_BLOCK_SIZE = 32 * 1024  # the .wandb file is a LevelDB-style log of 32 KiB blocks
_FILE_HEADER = 7  # ":W&B", magic 0xBEE1, version 0
_RECORD_HEADER = 7  # CRC32 (4), length (2), type (1): 1 full, 2 first, 3 middle, 4 last


def _read_run_file(path: str) -> tuple[list[dict[str, Any]], bool]:
    """:return: the history rows of one ``.wandb`` file, and whether its run has finished (an ``exit`` record)"""
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as f:
        data = f.read()
    if len(data) >= 4 and data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file.")
    rows, finished = [], False
    pos, pending = _FILE_HEADER, b""
    while pos + _RECORD_HEADER <= len(data):
        left = _BLOCK_SIZE - pos % _BLOCK_SIZE
        if left < _RECORD_HEADER:  # block tail too short for a record header: padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _RECORD_HEADER])
        if pos + _RECORD_HEADER + length > len(data):  # a record still being written
            break
        chunk = data[pos + _RECORD_HEADER : pos + _RECORD_HEADER + length]
        pos += _RECORD_HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind not in (1, 4):
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        record_type = record.WhichOneof("record_type")
        if record_type == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        finished = finished or record_type == "exit"
    return rows, finished


def read_offline_history(folder: str | os.PathLike, timeout: float = 30.0) -> list[dict[str, Any]]:
    """
    The ``wandb.log`` rows of the offline run(s) under ``folder``, read back from the binary
    ``<folder>/wandb/offline-run-*/run-*.wandb`` files (wandb 0.31 has no public reader).

    ``run.finish()`` can return before W&B's background process has written the file, so
    this waits (up to ``timeout``) until every run's file holds its final ``exit`` record.

    :param folder: the ``dir`` given to ``wandb.init`` (the logger's folder)
    :param timeout: seconds to wait for unfinished runs (then their rows so far are returned)
    :return: one ``{key: value}`` dict per logged row, in order (runs in file-name order)
    """
    paths = sorted(glob.glob(os.path.join(os.fspath(folder), "wandb", "offline-run-*", "run-*.wandb")))
    if not paths:
        raise FileNotFoundError(f"no offline W&B run under {folder}/wandb/ (was WANDB_MODE=offline set?)")
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    for path in paths:
        run_rows, finished = _read_run_file(path)
        while not finished and time.monotonic() < deadline:
            time.sleep(0.1)
            run_rows, finished = _read_run_file(path)
        rows.extend(run_rows)
    return rows
