import json
import subprocess
import sys
from pathlib import Path

import pytest

from avsearch.cli_args import hoist_global_options


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["query", "a.wav", "--json"], ["--json", "query", "a.wav"]),
        (
            ["query", "a.wav", "--json", "--index", "I", "--top", "3"],
            ["--json", "--index", "I", "query", "a.wav", "--top", "3"],
        ),
        (
            ["--index", "I", "embed", "m", "-q", "--index=J"],
            ["--index", "I", "-q", "--index=J", "embed", "m"],
        ),
        (["index", "stats", "--json"], ["--json", "index", "stats"]),
        (["--index", "query", "embed", "x"], ["--index", "query", "embed", "x"]),
        (["query", "--", "--json"], ["query", "--", "--json"]),
        (["--json", "doctor"], ["--json", "doctor"]),
        (["--help"], ["--help"]),
    ],
)
def test_hoist_global_options(argv: list[str], expected: list[str]) -> None:
    assert hoist_global_options(argv) == expected


def test_json_and_index_after_the_subcommand(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "avsearch", "index", "stats", "--json", "--index", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 3, run.stderr
    assert str(tmp_path) in json.loads(run.stdout)["error"]
