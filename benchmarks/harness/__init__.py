"""
The benchmark harness: a study is a declarative spec; its runs are cached by a hash of their configuration, computed
in worker processes (resumable), aggregated over seeds, and written by one writer.

A study module (``benchmarks/<name>.py``) puts ``benchmarks/`` on ``sys.path``, imports this package and declares a
:class:`Study`; ``python benchmarks/<name>.py`` then runs it (:func:`harness.cli.main`). Modules:

- :mod:`harness.spec`: :class:`Run`, :func:`grid`, :class:`Study`, :class:`Context`, :class:`Report`
- :mod:`harness.keys`: the cache key, a hash of a run's function and configuration
- :mod:`harness.cache`: one atomically written JSON file per run, with the library version that produced it
- :mod:`harness.runner`: the missing runs in worker processes with a progress bar
- :mod:`harness.aggregate`: seed mean and spread, stratified-bootstrap interval estimates (rliable's)
- :mod:`harness.writer`: ``<name>.json``, ``.png``, ``.md`` and the docs' results blocks
- :mod:`harness.cli`: the command line every study shares
"""

from harness.aggregate import Interval, interval_estimate, positive, seed_spread
from harness.cache import Cache
from harness.spec import Context, Report, Results, Run, Settings, Study, Sweep, grid
from harness.writer import table

__all__ = [
    "Cache",
    "Context",
    "Interval",
    "Report",
    "Results",
    "Run",
    "Settings",
    "Study",
    "Sweep",
    "grid",
    "interval_estimate",
    "positive",
    "seed_spread",
    "table",
]
