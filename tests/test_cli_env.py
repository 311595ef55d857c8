"""The CLI puts numpy's BLAS on one thread before numpy is imported (torch does the heavy
work; OpenBLAS's spinning threads took its cores), unless the user chose a number."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = (
    "import os, sys\n"
    "import avsearch.cli\n"
    "assert 'numpy' not in sys.modules\n"
    "print(os.environ['OPENBLAS_NUM_THREADS'])\n"
)


def _run(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_cli_puts_blas_on_one_thread_unless_told() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _run(env) == "1"
    assert _run({**env, "OPENBLAS_NUM_THREADS": "3"}) == "3"
