"""`avsearch index check|repair|stats`, `eval`, `query` and `doctor` on damaged indexes (fast:
indexes built directly with random vectors, no model run)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from avsearch.cli import app
from avsearch.store.index import IndexStore
from tests.store.conftest import STAMP, add_file, set_vector

runner = CliRunner()


def cli(*args: str) -> tuple[int, Any, str, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    data = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None
    return result.exit_code, data, result.stdout, result.stderr


@pytest.fixture
def index(tmp_path: Path) -> Path:
    root = tmp_path / "index"
    rng = np.random.default_rng(0)
    with IndexStore.create_or_open(root, STAMP) as store:
        for i in range(4):
            add_file(store, str(tmp_path / "media" / f"class{i % 2}" / f"f{i}.mp4"), rng)
        store.sync_vectors()
    return root


def test_check_healthy_then_damaged_then_repaired(index: Path) -> None:
    code, data, _, _ = cli("--index", str(index), "--json", "index", "check")
    assert code == 0 and data["ok"] is True and data["problems"] == []
    (index / "audio.faiss").write_bytes(b"")
    set_vector(index, 6, float("nan"))

    code, data, _, _ = cli("--index", str(index), "--json", "index", "check")
    assert code == 3 and data["ok"] is False
    assert all(set(p) == {"what", "file", "detail", "repairable"} for p in data["problems"])
    assert {p["what"] for p in data["problems"]} >= {"non-finite vectors"}
    code, _, out, _ = cli("--index", str(index), "index", "check")
    assert code == 3 and "PROBLEM  manifest.sqlite: non-finite vectors" in out
    assert "repairable by `avsearch index repair`" in out

    code, _, out, _ = cli("--index", str(index), "index", "repair")
    assert code == 0, out
    assert "1 file(s) will be re-encoded by the next `avsearch embed`" in out
    assert "ok: the index is healthy" in out
    code, _, out, _ = cli("--index", str(index), "index", "check")
    assert code == 0 and out.strip().endswith("checks passed")


def test_stats_says_a_damaged_vector_file_is_not_up_to_date(index: Path) -> None:
    (index / "visual.faiss").write_bytes(b"\0" * 10)
    code, data, _, _ = cli("--index", str(index), "--json", "index", "stats")
    assert code == 0
    visual = data["vector_indexes"]["visual"]
    assert visual["up_to_date"] is False and visual["damaged"] is True
    assert "visual.faiss is 10 bytes" in visual["problem"]
    assert data["vector_indexes"]["audio"]["up_to_date"] is True


def test_eval_refuses_non_finite_vectors(index: Path) -> None:
    set_vector(index, 2, float("inf"))
    code, data, _, err = cli("--index", str(index), "--json", "eval")
    assert code == 3 and "NaN or infinite" in data["error"]
    assert "index repair" in data["hint"] and "Traceback" not in err


@pytest.mark.parametrize(
    "command", [["index", "stats"], ["eval"], ["query", "QUERY"], ["index", "check"]]
)
def test_a_corrupt_manifest_is_exit_3_naming_the_file(
    index: Path, tmp_path: Path, command: list[str]
) -> None:
    (index / "manifest.sqlite").write_bytes(os.urandom(32768))
    query = tmp_path / "q.wav"
    query.write_bytes(b"RIFF")
    args = [str(query) if a == "QUERY" else a for a in command]
    code, _, out, err = cli("--index", str(index), *args)
    assert code == 3
    assert "manifest.sqlite is not a SQLite database or is damaged" in out + err
    assert "Traceback" not in out + err


def test_repair_of_an_unreadable_manifest_says_embed_must_run_again(index: Path) -> None:
    (index / "manifest.sqlite").write_bytes(os.urandom(32768))
    code, data, _, _ = cli("--index", str(index), "--json", "index", "repair")
    assert code == 3 and data["needs_embed"] is True
    assert any("manifest.sqlite.damaged-" in a for a in data["actions"])
    code, _, _, err = cli("--index", str(index), "index", "check")
    assert code == 3 and "no avsearch index" in err


def test_repair_while_an_embed_runs_is_refused(index: Path) -> None:
    with IndexStore.create_or_open(index, STAMP):
        code, _, _, err = cli("--index", str(index), "index", "repair")
    assert code == 1
    assert f"another avsearch embed (pid {os.getpid()}) is writing to {index}" in err


def test_doctor_fails_with_exit_3_on_a_damaged_index(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import avsearch.doctor as doctor

    def fake_checks(index_dir: Path) -> list[dict[str, Any]]:  # installation ok, real index check
        python = {"name": "python", "ok": True, "detail": "-", "required": True}
        return [python, doctor._index_check(index_dir)]

    monkeypatch.setattr(doctor, "run_checks", fake_checks)
    code, data, _, _ = cli("--index", str(index), "--json", "doctor")
    assert code == 0 and data["ok"] is True
    (index / "audio.faiss").write_bytes(b"")
    code, data, _, _ = cli("--index", str(index), "--json", "doctor")
    assert code == 3 and data["ok"] is False
    check = data["checks"][-1]
    assert (
        check["name"] == "index"
        and check["required"]
        and "audio.faiss is 0 bytes" in (check["detail"])
    )
    assert check["problems"][0]["file"] == "audio.faiss"


def test_doctor_without_an_index_only_warns(tmp_path: Path) -> None:
    from avsearch.doctor import _index_check

    check = _index_check(tmp_path / "none")
    assert check["ok"] is False and check["required"] is False
    with IndexStore.create_or_open(tmp_path / "new", STAMP) as store:
        add_file(store, "/m/a.mp4", np.random.default_rng(1))
        store.sync_vectors()
    assert _index_check(tmp_path / "new")["ok"] is True


@pytest.mark.slow
def test_real_embed_then_damage_by_hand(tmp_path: Path) -> None:
    """The issue's recipe on a real index: damaged FAISS file, then a corrupt manifest."""
    from tests.mediagen import write_png, write_wav

    media = tmp_path / "media"
    write_wav(media / "beep.wav", freq=1000.0, seconds=3.0)
    write_png(media / "red.png", (220, 20, 20))
    index = tmp_path / "index"
    code, _, _, err = cli("--index", str(index), "embed", str(media))
    assert code == 0, err
    (index / "visual.faiss").write_bytes(b"")  # `: > I/visual.faiss`
    code, data, _, err = cli("--index", str(index), "--json", "query", str(media / "beep.wav"))
    assert code == 0 and data["results"][0]["path"].endswith("red.png"), err
    flat = "".join(err.split())  # (rich wraps log lines)
    assert "visual.faissis0bytes" in flat and "rebuildingitfromthemanifest" in flat
    (index / "audio.faiss").write_bytes(b"")
    code, _, _, err = cli("--index", str(index), "embed", str(media))  # rebuilds it
    assert code == 0, err
    code, _, _, _ = cli("--index", str(index), "index", "check")
    assert code == 0

    junk = os.urandom(32768)
    (index / "manifest.sqlite").write_bytes(junk)
    code, _, _, err = cli("--index", str(index), "embed", str(media))
    assert code == 3 and "manifest.sqlite is not a SQLite database" in err and "--rebuild" in err
    assert (index / "manifest.sqlite").read_bytes() == junk  # never overwritten
    code, data, _, err = cli("--index", str(index), "--json", "embed", str(media), "--rebuild")
    assert code == 0 and data["files"]["new"] == 2, err
    code, _, _, _ = cli("--index", str(index), "index", "check")
    assert code == 0
