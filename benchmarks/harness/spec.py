"""
A study as data: its settings, the runs they expand to, and the report made from the runs' results.

A study module declares a :class:`Study`: the reported settings (and smaller ones for ``--quick``), a function from
settings to the list of :class:`Run` (each a module-level function and the keyword arguments it is called with, often
built with :func:`grid`: algorithms x families x hyperparameters x seeds x budget), and a function from a
:class:`Context` (the settings and every run's result) to a :class:`Report` (the JSON data, the figure, the
Markdown table). Runs that are made from other runs' results (a tuning study's best entry, then trained) come from
``then``, called once the others are in. Running, caching and writing are the harness's (:mod:`harness.cli`).
"""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from harness.keys import config_key

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Settings(dict[str, Any]):
    """A study's settings: a dict whose keys also read as attributes (``s.seeds`` for ``s["seeds"]``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no setting {name!r}") from None


@dataclass(frozen=True, eq=False)
class Run:
    """
    One run of a study: a function and the keyword arguments it is called with.

    Runs are equal when their keys are: the same function with the same configuration.

    :param fn: computes the run's result (JSON-able: numbers, lists, dicts, NumPy arrays) as ``fn(**config)``; a
        module-level function, so that worker processes can import it
    :param config: every argument the result depends on (JSON-able); hashed into :attr:`key`
    :param label: the readable start of the cache file's name (``H10_fast_fedpg_s0``); the key makes it unique
    """

    fn: Callable[..., Any]
    config: Mapping[str, Any]
    label: str = "run"

    @cached_property
    def key(self) -> str:
        """The hash of the function's name and the configuration (:func:`harness.keys.config_key`)."""
        return config_key(self.fn.__qualname__, dict(self.config))

    @property
    def file_name(self) -> str:
        """``<label>_<key>.json``: the run's file in the study's cache folder."""
        return f"{self.label}_{self.key}.json"

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.key == self.key


def grid(fn: Callable[..., Any], label: str, fixed: Mapping[str, Any] | None = None, **axes: Sequence[Any]) -> list[Run]:
    """
    The runs of every combination of the axes' values (the last axis varies fastest).

    :param fn: the function of every run
    :param label: a format string over the configuration, ``"{algo}_H{local_steps}_s{seed}"``
    :param fixed: arguments shared by every run
    :param axes: argument name -> the values it takes
    :return: the runs, ``fixed`` merged into each configuration
    """
    names = list(axes)
    runs = []
    for values in itertools.product(*axes.values()):
        config = {**(fixed or {}), **dict(zip(names, values, strict=True))}
        runs.append(Run(fn, config, label.format(**config)))
    return runs


class Results(Mapping[Run, Any]):
    """
    Every cached result of a study's runs, looked up by :class:`Run`.

    :param results: run -> result, as read back from the cache (so a fresh run and a cached one look the same)
    :param missing: the study's runs that have no result (not run yet, ``--report``)
    """

    def __init__(self, results: Mapping[Run, Any], missing: Sequence[Run] = ()) -> None:
        self._results = dict(results)
        self.missing = list(missing)

    def __getitem__(self, run: Run) -> Any:
        try:
            return self._results[run]
        except KeyError:
            raise KeyError(f"{run.label} ({run.key}) has no cached result: run the study without --report") from None

    def __iter__(self) -> Iterator[Run]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def __call__(self, fn: Callable[..., Any], **config: Any) -> Any:
        """
        :param fn: a run's function
        :param config: its full configuration
        :return: that run's result (a shorthand for ``results[Run(fn, config)]``)
        """
        return self[Run(fn, config)]


@dataclass(frozen=True)
class Sweep:
    """
    What a results file says about the sweep behind it, kept in the cache beside the runs.

    :param out_dir: the results folder of the invocation that first computed the study's runs
    :param seconds: wall-clock seconds of the invocations that computed runs, summed
    :param machine: where that invocation ran (:func:`harness.cache.machine`: ``platform``, ``machine``, ``python``,
        ``cpus``; only what was recorded when the runs came from elsewhere), for the reports that say so
    """

    out_dir: str
    seconds: float
    machine: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """
    What a study's report is made from.

    :param settings: the study's settings (``--quick`` and ``--set`` applied), after ``quick`` (whether it is a smoke
        run) and ``out_dir`` (the sweep's results folder), which the JSON of most studies records with them
    :param results: every run's result
    :param sweep: the sweep's record (results folder and compute time)
    """

    settings: Settings
    results: Results
    sweep: Sweep


@dataclass
class Report:
    """
    A study's outputs: ``<name>.json``, ``<name>.png`` (optional) and ``<name>.md`` (optional).

    :param data: the JSON data (NumPy values converted; ``NaN`` written as ``null``)
    :param figure: the figure (saved after ``tight_layout``, at ``dpi``)
    :param markdown: the Markdown table that the docs' ``<!-- results:<name> -->`` blocks show
    :param indent: JSON indentation
    :param final_newline: end the JSON file with a newline
    :param extra_figures: further figures, file name -> figure
    :param extra_markdown: further Markdown tables (a docs block each), file name -> text
    :param dpi: the figures' resolution
    :param layout_rect: the figures' ``tight_layout`` rectangle (figure coordinates; room for a legend below the axes)
    """

    data: dict[str, Any]
    figure: Figure | None = None
    markdown: str | None = None
    indent: int = 1
    final_newline: bool = False
    extra_figures: dict[str, Figure] = field(default_factory=dict)
    extra_markdown: dict[str, str] = field(default_factory=dict)
    dpi: int = 120
    layout_rect: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class Study:
    """
    A declarative benchmark: settings, the runs they expand to, and the report.

    :param name: stem of the results files (``benchmarks/results/<name>.*``) and of the cache folder
    :param description: the study's docstring (its first paragraph is the ``--help`` text)
    :param settings: the reported settings (their order is the order the JSON records them in)
    :param runs: settings -> every run of the study
    :param report: :class:`Context` -> :class:`Report`
    :param quick: settings overridden by ``--quick`` (a smoke run of seconds)
    :param then: runs made from other runs' results (a tuning study's best entry, trained on new seeds): called with
        the settings and the results of ``runs`` once they are all in, and computed after them
    """

    name: str
    description: str
    settings: Mapping[str, Any]
    runs: Callable[[Settings], list[Run]]
    report: Callable[[Context], Report]
    quick: Mapping[str, Any] = field(default_factory=dict)
    then: Callable[[Settings, Results], list[Run]] | None = None

    def main(self, argv: list[str] | None = None, output: pathlib.Path | None = None) -> dict[str, Any]:
        """
        Run the study from the command line (:func:`harness.cli.main`).

        :param argv: the arguments (``sys.argv[1:]`` when ``None``)
        :param output: the results folder (instead of ``--out-dir``)
        :return: the JSON data written
        """
        from harness.cli import main

        return main(self, argv, output)
