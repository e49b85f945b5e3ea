"""The README stays a short guide that starts with the two set-up commands, and the MkDocs site
(mkdocs.yml, docs/, the API reference read from gaxp's docstrings) builds with --strict."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/gaxp-train",
    ".venv/bin/python -m pytest -n 2",
]


def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    blocks = re.findall(r"^```bash\n(.*?)^```$", text, flags=re.S | re.M)
    assert [b.strip() for b in blocks[:2]] == COMMANDS  # the first two code blocks, verbatim
    lines = text.splitlines()
    assert lines.index(COMMANDS[0]) < lines.index(COMMANDS[1]) < 30  # at the top
    assert re.search(r"^## .*$", text, flags=re.M).group(0) == "## Set up and run (two commands)"


def test_readme_links_point_at_files():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    missing = [l for l in links if "://" not in l and not (ROOT / l).exists()]
    assert not missing


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert (tmp_path / "site" / "errors" / "index.html").exists()
    api = (tmp_path / "site" / "api" / "losses" / "index.html").read_text()
    assert 'id="gaxp.losses"' in api  # mkdocstrings rendered the module, not an empty page
