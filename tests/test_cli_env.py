"""The CLI puts numpy's BLAS on one thread and lets torch's OpenMP threads sleep when idle,
before numpy or torch is imported (their spinning threads took the cores other stages needed),
unless the user chose otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = (
    "import os, sys\n"
    "import avsearch.cli\n"
    "assert 'numpy' not in sys.modules and 'torch' not in sys.modules\n"
    "print(os.environ[sys.argv[1]])\n"
)


def _run(env: dict[str, str], name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, name], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(
    ("name", "default", "chosen"),
    [("OPENBLAS_NUM_THREADS", "1", "3"), ("OMP_WAIT_POLICY", "PASSIVE", "ACTIVE")],
)
def test_the_cli_sets_thread_behaviour_unless_told(name: str, default: str, chosen: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != name}
    assert _run(env, name) == default
    assert _run({**env, name: chosen}, name) == chosen
