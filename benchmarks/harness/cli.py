"""
The command line every study shares: ``python benchmarks/<study>.py [--quick] [--report] [--workers N] ...``.

Settings come from the study's spec (``--quick`` swaps in the smoke sizes; ``--<setting> value ...`` or
``--set key=value`` changes one, ``--families a b`` for a list); the runs missing from the cache are computed in
``--workers`` processes (the runs made from other runs' results, :attr:`harness.spec.Study.then`, once those are in),
then the report is made from the cache alone and written by :func:`harness.writer.write` (and the docs refilled when
it goes to ``benchmarks/results``).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
from typing import Any

from harness.cache import Cache
from harness.keys import jsonable
from harness.runner import collect, run_missing
from harness.spec import Context, Results, Run, Settings, Study, Sweep
from harness.writer import BENCHMARKS, RESULTS, refill_docs, write
from sb3_fedpg.common.cli import ArgumentParser, interrupted_exit_code, sigterm_as_interrupt

ROOT = BENCHMARKS.parent


def parse_value(text: str) -> Any:
    """
    :param text: a setting's value on the command line
    :return: it read as JSON (``3``, ``[1,2]``, ``true``), or else the string itself (``cartpole``)
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_setting(text: str) -> tuple[str, Any]:
    """
    :param text: ``key=value``, the value JSON (``seeds=3``, ``agents=[1,2]``) or else a string
    :return: the key and the value
    """
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--set takes key=value, got {text!r}")
    return key.replace("-", "_"), parse_value(value)


def settings_of(study: Study, quick: bool, overrides: list[str], flags: dict[str, Any] | None = None) -> Settings:
    """
    :param study: the study
    :param quick: the smoke sizes
    :param overrides: ``key=value`` items
    :param flags: settings given as flags (``--families cartpole pendulum``), applied before ``overrides``
    :return: the study's settings with the smoke sizes, the flags and the overrides applied
    :raises SystemExit: an override names no setting of the study
    """
    settings = Settings({**study.settings, **(study.quick if quick else {}), **(flags or {})})
    for text in overrides:
        key, value = parse_setting(text)
        if key not in settings:
            raise SystemExit(f"{study.name}: no setting {key!r} (settings: {', '.join(settings)})")
        settings[key] = value
    return settings


def main(study: Study, argv: list[str] | None = None, output: pathlib.Path | None = None) -> dict[str, Any]:
    """
    Compute a study's missing runs, then write its report from the cache.

    :param study: the study
    :param argv: the arguments (``sys.argv[1:]`` when ``None``)
    :param output: the results folder (instead of ``--out-dir``)
    :return: the JSON data written
    """
    defaults = ", ".join(f"{key}={json.dumps(value)}" for key, value in study.settings.items())
    smoke = ", ".join(f"{key}={json.dumps(value)}" for key, value in study.quick.items())
    epilog = f"settings (change one with --set key=value): {defaults}" + (f"; --quick: {smoke}" if smoke else "")
    parser = ArgumentParser(description=study.description.strip().split("\n\n")[0], epilog=epilog)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run of seconds), not the reported ones")
    parser.add_argument(
        "--out-dir", "--output", type=pathlib.Path, default=None, help="results folder (default: benchmarks/results)"
    )
    parser.add_argument("--report", action="store_true", help="compute nothing: report the cached runs")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: 1 with --quick, else all CPUs)")
    parser.add_argument("--cache", type=pathlib.Path, default=None, help="cache folder (default: benchmarks/cache/<name>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a setting (JSON value)")
    for key, value in study.settings.items():  # every setting but a dict is a flag too: --seeds 5, --families a b
        flag, many = "--" + key.replace("_", "-"), isinstance(value, list | tuple)
        if not isinstance(value, dict) and flag not in parser._option_string_actions:
            help_text = f"the setting {key} (default: {json.dumps(value)})"
            parser.add_argument(
                flag, dest=f"setting:{key}", nargs="+" if many else None, type=parse_value, metavar="VALUE", help=help_text
            )
    args = parser.parse_args(argv)
    given = {dest.removeprefix("setting:"): value for dest, value in vars(args).items() if dest.startswith("setting:")}
    flags = {key: value for key, value in given.items() if value is not None}
    settings = settings_of(study, args.quick, args.set, flags)
    out_dir = pathlib.Path(output or args.out_dir or (ROOT / "runs" / f"{study.name}_quick" if args.quick else RESULTS))
    cache = Cache(args.cache or (out_dir / "cache" / study.name if args.quick else BENCHMARKS / "cache" / study.name))
    workers = args.workers or (1 if args.quick else os.cpu_count() or 1)

    def compute(runs: list[Run]) -> Results:
        """The missing runs computed (not with ``--report``), then every run's result from the cache."""
        if not args.report:
            start = time.perf_counter()
            try:
                with sigterm_as_interrupt():
                    computed = run_missing(runs, cache, workers, desc=study.name)
            except BaseException as error:  # every completed run is stored: the next invocation resumes
                cache.record_sweep(str(out_dir), time.perf_counter() - start)
                if isinstance(error, KeyboardInterrupt):
                    sys.exit(interrupted_exit_code(error))
                raise
            if computed:
                cache.record_sweep(str(out_dir), time.perf_counter() - start)
        results = collect(runs, cache)
        if results.missing:
            raise SystemExit(
                f"{study.name}: {len(results.missing)} of {len(results) + len(results.missing)} runs are not in "
                f"{cache.folder} ({', '.join(run.label for run in results.missing[:5])}, ...): run without --report"
            )
        return results

    runs = study.runs(settings)
    results = compute(runs)
    if study.then is not None:  # runs made from the results of the others
        results = compute(runs + study.then(settings, results))
    sweep = cache.sweep() or Sweep(str(out_dir), 0.0)
    import matplotlib

    matplotlib.use("Agg")  # reports draw into files
    report = study.report(Context(Settings(quick=args.quick, out_dir=sweep.out_dir, **settings), results, sweep))
    write(study.name, report, out_dir)
    if out_dir.resolve() == RESULTS.resolve():
        refill_docs()
    if report.markdown:
        print(report.markdown)
    return jsonable(report.data, finite=True)
