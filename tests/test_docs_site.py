"""The documentation site builds with ``mkdocs build --strict`` and shows the API reference and the figures."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_docs_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    result = subprocess.run(
        [*command, "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    # FederatedPG's constructor parameters, rendered from its :param fields.
    fedpg = (site / "api" / "fedpg" / "index.html").read_text()
    assert 'id="sb3_fedpg.fedpg.FederatedPG"' in fedpg
    assert "server_learning_rate" in fedpg
    assert "applied to the averaged parameter change" in fedpg
    # envs/ is documented as the package it is installed as (tools/griffe_docs.py).
    envs = (site / "api" / "envs" / "index.html").read_text()
    assert 'id="sb3_fedpg.envs.families.FamilySpec"' in envs
    # Sphinx roles become links, not literal ":func:" text.
    for page in (site / "api").glob("*/index.html"):
        assert not re.search(r":(mod|class|func|meth|attr|data):", page.read_text()), page
    assert 'href="../fedmath/#sb3_fedpg.common.fedmath"' in fedpg

    # The benchmark figures are served through docs/benchmarks/results; the results' tables are not pages.
    assert (site / "benchmarks" / "results" / "tabular_bias.png").stat().st_size > 0
    assert 'src="../results/tabular_bias.png"' in (site / "benchmarks" / "tabular" / "index.html").read_text()
    assert not (site / "benchmarks" / "results" / "tabular_claims").exists()
