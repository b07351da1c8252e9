"""
Griffe extension of the documentation site (mkdocs.yml, mkdocstrings' python handler). Once ``sb3_fedpg`` is loaded:

1. ``envs/`` becomes ``sb3_fedpg.envs``. setup.cfg installs the top-level ``envs/`` folder as that subpackage
   (``package_dir``); Griffe finds submodules by walking the package's folder, so on its own it never sees it.
   The extension reads ``envs/*.py`` (statically, like the rest) and attaches the result.
2. The lazily imported top-level names (``sb3_fedpg.FederatedPG``, ...: ``_LAZY`` in ``sb3_fedpg/__init__.py``)
   become aliases, as they are at run time, so references to them resolve.
3. Sphinx roles in docstrings (``:class:`~sb3_fedpg.common.fedmath.LocalSolver```, ``:func:`run_round```) become
   code spans that link to the object's API entry. Names are resolved as Python would in the docstring's scope; a
   link whose target no page documents stays plain code (an *optional* autorefs reference, so no warning).
"""

from __future__ import annotations

import ast
import html
import pathlib
import re
from typing import Any

import griffe

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
PACKAGE = "sb3_fedpg"

#: ``:role:`target``` with an optional domain (``:py:func:``) and Sphinx's ``~`` (show the last part only).
ROLE = re.compile(r":(?:py:)?(?:mod|class|func|meth|attr|data|obj|exc|const):`(?P<target>[^`<>]+)`")


def _visit(name: str, path: pathlib.Path, parent: griffe.Module, loader: griffe.GriffeLoader) -> griffe.Module:
    code = path.read_text(encoding="utf-8")
    loader.lines_collection[path] = code.splitlines(keepends=False)
    return griffe.visit(
        name,
        filepath=path,
        code=code,
        extensions=loader.extensions,
        parent=parent,
        docstring_parser=loader.docstring_parser,
        docstring_options=loader.docstring_options,
        lines_collection=loader.lines_collection,
        modules_collection=loader.modules_collection,
    )


def attach_envs(pkg: griffe.Module, loader: griffe.GriffeLoader) -> None:
    """
    Load ``envs/`` as the subpackage ``envs`` of ``pkg``.

    :param pkg: the loaded ``sb3_fedpg`` package
    :param loader: the loader that loaded it
    """
    envs = _visit("envs", ENVS / "__init__.py", pkg, loader)
    for path in sorted(ENVS.glob("*.py")):
        if path.stem != "__init__":
            envs.set_member(path.stem, _visit(path.stem, path, envs, loader))
    pkg.set_member("envs", envs)
    loader.expand_exports(envs)


def alias_lazy_names(pkg: griffe.Module) -> None:
    """
    Add the names that ``pkg.__getattr__`` imports on first use (``_LAZY = {name: module}``) as aliases.

    :param pkg: the loaded ``sb3_fedpg`` package
    """
    lazy = pkg.members.get("_LAZY")
    if lazy is None or not lazy.is_attribute:
        return
    for name, module in ast.literal_eval(str(lazy.value)).items():
        if name not in pkg.members:
            pkg.set_member(name, griffe.Alias(name, f"{module}.{name}", parent=pkg))


def _target_path(obj: griffe.Object, target: str) -> str | None:
    if target.startswith(f"{PACKAGE}."):
        path = target
    else:
        first, _, rest = target.partition(".")
        try:
            path = obj.resolve(first)
        except griffe.NameResolutionError:
            return None
        path = f"{path}.{rest}" if rest else path
    # Where the object is defined: an API page registers that path for it, whichever path it documents it under.
    try:
        return obj.modules_collection[path].canonical_path
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return path


def render_roles(obj: griffe.Object) -> None:
    """
    Replace the Sphinx roles in the docstrings of ``obj`` and its members by (optional) cross-references.

    :param obj: a module, class, function or attribute
    """
    if obj.docstring is not None:

        def replace(match: re.Match[str]) -> str:
            target = match["target"].strip()
            short = target.startswith("~")
            target = target.lstrip("~.")
            shown = target.rsplit(".", 1)[-1] if short else target
            code = f"<code>{html.escape(shown)}</code>"
            path = _target_path(obj, target)
            if path is None or not path.startswith(f"{PACKAGE}."):
                return code
            return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

        obj.docstring.value = ROLE.sub(replace, obj.docstring.value)
    for member in obj.members.values():
        if not member.is_alias:
            render_roles(member)  # type: ignore[arg-type]


class Sb3FedpgDocs(griffe.Extension):
    """``envs/`` as ``sb3_fedpg.envs``, the lazy top-level names, and Sphinx roles as cross-references."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """
        :param pkg: the package Griffe has just loaded (only ``sb3_fedpg`` is touched)
        :param loader: the loader that loaded it
        :param kwargs: further hook arguments (unused)
        """
        if pkg.path != PACKAGE:
            return
        if (ENVS / "__init__.py").is_file():
            attach_envs(pkg, loader)
        alias_lazy_names(pkg)
        render_roles(pkg)
