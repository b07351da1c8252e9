"""
Command-line helpers shared by every entry point (library CLIs, benchmarks, tools).

Docstrings are written for the API reference (Sphinx roles, double backticks, ``.. code-block::``
directives); :class:`ArgumentParser` turns them into plain text for ``--help`` and adds ``--version``.
Importing this module is cheap (no torch), so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from sb3_fedpg import __version__

_ROLE = re.compile(r":(?:py:)?(?:mod|class|func|meth|attr|data|obj|exc|ref|paramref|term):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_DIRECTIVE = re.compile(r"^[ \t]*\.\. [\w-]+::.*\n(?:[ \t]*\n)?", flags=re.M)
_FIELD = re.compile(r"^(\s*):(param|return|returns|raises?|type|rtype)(?: ([^:]+))?:", flags=re.M)


def _role_text(match: re.Match[str]) -> str:
    target = match.group(2).split(" <")[0]
    return target.rsplit(".", 1)[-1] if match.group(1) else target  # Sphinx's ``~``: the last component only


def plain_text(text: str | None) -> str:
    """
    Turn a reStructuredText docstring into the plain text a terminal user should read.

    :param text: a docstring (``None`` gives ``""``)
    :return: the text without Sphinx roles, literals' double backticks, directive lines or field markers
    """
    if not text:
        return ""
    text = _DIRECTIVE.sub("", text)
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"\1", text)
    text = _FIELD.sub(lambda m: f"{m.group(1)}{m.group(3) or m.group(2)}:", text)
    return text.strip("\n")


def _prog() -> str | None:
    """:return: ``python -m <module>`` when the program was started with ``-m`` (argparse would say ``__main__.py``)"""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    if not name:
        return None  # a script: argparse's own choice (its file name) is right
    return f"python -m {name.removesuffix('.__main__')}"


class ArgumentParser(argparse.ArgumentParser):
    """
    ``argparse.ArgumentParser`` whose description, epilog and argument help are plain text (see :func:`plain_text`)
    and which answers ``--version`` with the installed sb3-fedpg version.

    :param args: passed to ``argparse.ArgumentParser``
    :param version: add a ``--version`` flag
    :param kwargs: passed to ``argparse.ArgumentParser``; ``formatter_class`` defaults to
        ``RawDescriptionHelpFormatter`` (docstrings keep their line breaks and indented examples)
    """

    def __init__(self, *args: Any, version: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("prog", _prog())
        for key in ("description", "epilog"):
            if kwargs.get(key):
                kwargs[key] = plain_text(kwargs[key])
        super().__init__(*args, **kwargs)
        if version:
            self.add_argument("--version", action="version", version=f"%(prog)s (sb3-fedpg {__version__})")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if isinstance(kwargs.get("help"), str):
            kwargs["help"] = plain_text(kwargs["help"])
        return super().add_argument(*args, **kwargs)


class Terminated(KeyboardInterrupt):
    """
    SIGTERM arrived (``kill``, ``docker stop``, systemd, a batch scheduler's preemption): handled like Ctrl-C by every
    ``except KeyboardInterrupt``, so the same code saves the run.

    :param signum: the signal
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def interrupted_exit_code(error: BaseException) -> int:
    """
    :param error: the ``KeyboardInterrupt`` (or :class:`Terminated`) that ended a command
    :return: the shell's exit code for it: ``128 + SIGTERM`` (143) or ``128 + SIGINT`` (130)
    """
    import signal

    return 128 + (error.signum if isinstance(error, Terminated) else int(signal.SIGINT))


class sigterm_as_interrupt:
    """
    Turn SIGTERM into :class:`Terminated` (a ``KeyboardInterrupt``) while the ``with`` block runs, in the main thread
    (elsewhere signals cannot be handled and it does nothing). A second SIGTERM while the first is being handled
    (saving the run) is ignored, so the save completes.
    """

    def __enter__(self) -> sigterm_as_interrupt:
        import signal
        import threading

        self._previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    @staticmethod
    def _handle(signum: int, frame: object) -> None:
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(signum)

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
