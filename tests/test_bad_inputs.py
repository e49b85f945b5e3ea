"""Every numbered row of the error tables in docs/errors.md, run through the real `gaxp-train` in
a subprocess: exit code 2, exactly one line on stderr containing the documented message, no
traceback."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import xla_flags

ERRORS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
BIN = Path(sys.executable).with_name("gaxp-train")
ROW = re.compile(r"^\| (\d+) \| `([^`]*)` \| `([^`]*)` \|(?: [^|]* \|)?$")


def _table() -> list[tuple[str, str, str]]:
    """The numbered rows of every table after the marker (the page groups them by topic)."""
    text = ERRORS.read_text()
    start = text.index("<!-- bad-inputs")
    rows = [r.groups() for r in map(ROW.match, text[start:].splitlines()) if r]
    numbers = sorted(int(n) for n, _, _ in rows)
    assert numbers == list(range(1, len(rows) + 1)), "row numbers must be 1..N, each once"
    return sorted(rows, key=lambda r: int(r[0]))


CASES = _table()


def test_the_table_has_at_least_25_distinct_cases():
    assert len(CASES) >= 25 and len({args for _, args, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("number,args,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, number, args, message):
    env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled",
               XLA_FLAGS=xla_flags(8))
    argv = [str(BIN), *shlex.split(args)]  # outputs (if any) go under tmp_path/outputs
    argv += [] if "logger=" in args else ["logger=none"]
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert lines[0].startswith("gaxp-train: error: ")
    assert "Traceback" not in result.stderr + result.stdout
