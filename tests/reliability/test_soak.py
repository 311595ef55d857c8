"""Soak: hundreds of random cycles of add / delete / rename / edit-in-place / re-embed / query on
one small folder and one index, checking after every cycle that the index is exactly what a
fresh build of the folder would be, and that no query names a file that is gone.

Seeded and bounded for the fast lane (fake model). For a longer run::

    AVSEARCH_SOAK_CYCLES=2000 AVSEARCH_SOAK_SEED=7 \\
        python -m pytest -q tests/reliability/test_soak.py -s

"Fresh build" is cached per file content (sha256 + extension): the segments a file gets when it
is embedded alone into an empty index. Edits in place keep the size and move the mtime on (as an
editor's save does); the ``large`` variant edits wav files of more than 1 MiB in the middle,
where a hash of the head and tail alone would not see the change.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from avsearch.config import QueryConfig
from avsearch.pipeline import EmbedSummary
from avsearch.query import run_query
from avsearch.store.index import IndexStore
from tests.mediagen import tone, write_png
from tests.reliability.conftest import FakeModel, embed, index_contents

CYCLES = int(os.environ.get("AVSEARCH_SOAK_CYCLES", "0") or 0)
SEED = int(os.environ.get("AVSEARCH_SOAK_SEED", "1234"))
WAV_HEADER = 44  # soundfile's PCM_16 wav header
MIB = 1 << 20


@dataclass
class Soak:
    root: Path
    index: Path
    scratch: Path
    model: FakeModel
    rng: random.Random
    large: bool
    fresh: dict[tuple[str, str], list[tuple[Any, np.ndarray]]] = field(default_factory=dict)
    counter: int = 0
    ops: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------------- making files
    def new_name(self, suffix: str) -> Path:
        self.counter += 1
        sub = self.rng.choice(["", "a", "b/c"])
        return self.root / sub / f"f{self.counter:04d}{suffix}"

    def write_wav(self, path: Path, big: bool = False) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if big:  # 192 kHz stereo 16-bit: 1.5 s is 1.1 MiB
            rate, seconds, channels = 192_000, 1.5, 2
        else:
            rate, seconds, channels = 16_000, self.rng.choice([0.4, 1.0, 1.7, 2.3]), 1
        freq = self.rng.uniform(100.0, 3000.0)
        data = np.stack([tone(freq * (c + 1), seconds, rate, 0.4) for c in range(channels)], 1)
        sf.write(str(path), data, rate, subtype="PCM_16")
        return path

    def write_picture(self, path: Path) -> Path:
        colour = tuple(self.rng.randrange(256) for _ in range(3))
        size = self.rng.choice([(32, 24), (64, 48), (40, 40)])
        return write_png(path, colour, size)  # type: ignore[arg-type]

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    # ------------------------------------------------------------------------- operations
    def op_add(self) -> str:
        kind = self.rng.choice(["wav", "wav", "png"] + (["big"] if self.large else []))
        if kind == "png":
            self.write_picture(self.new_name(".png"))
        else:
            self.write_wav(self.new_name(".wav"), big=kind == "big")
        return "add"

    def op_delete(self) -> str:
        self.rng.choice(self.files()).unlink()
        return "delete"

    def op_rename(self) -> str:
        src = self.rng.choice(self.files())
        dst = self.new_name(src.suffix)
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
        return "rename"

    def op_edit(self) -> str:
        """Same size, new samples, mtime moved on; in a >1 MiB file, only its middle changes."""
        wavs = [p for p in self.files() if p.suffix == ".wav"]
        if not wavs:
            return self.op_add()
        path = self.rng.choice(wavs)
        st = path.stat()
        data = bytearray(path.read_bytes())
        if len(data) > MIB + 8192:
            lo, hi = MIB + 1024, len(data) - 4096
        else:
            lo, hi = WAV_HEADER, len(data)
        start = self.rng.randrange(lo, hi - 2) & ~1
        end = min(hi, start + self.rng.randrange(256, 16384)) & ~1
        noise = self.rng.randbytes(end - start)
        data[start:end] = noise
        path.write_bytes(bytes(data))
        assert path.stat().st_size == st.st_size
        bumped = max(path.stat().st_mtime_ns, st.st_mtime_ns + 1_000_000)
        os.utime(path, ns=(bumped, bumped))
        return "edit"

    def op_rewrite(self) -> str:
        """A picture saved again with other content (its size may change)."""
        pngs = [p for p in self.files() if p.suffix == ".png"]
        if not pngs:
            return self.op_add()
        path = self.rng.choice(pngs)
        st = path.stat()
        self.write_picture(path)
        bumped = max(path.stat().st_mtime_ns, st.st_mtime_ns + 1_000_000)
        os.utime(path, ns=(bumped, bumped))
        return "rewrite"

    # ------------------------------------------------------------------------- checking
    def fresh_segments(self, path: Path) -> list[tuple[Any, np.ndarray]]:
        """The segments ``path``'s content gets when embedded alone into an empty index."""
        data = path.read_bytes()
        key = (path.suffix, hashlib.sha256(data).hexdigest())
        if key not in self.fresh:
            folder = self.scratch / f"one-{len(self.fresh)}"
            folder.mkdir(parents=True)
            (folder / f"x{path.suffix}").write_bytes(data)
            embed([folder], self.scratch / f"index-{len(self.fresh)}", self.model)
            (segs,) = index_contents(self.scratch / f"index-{len(self.fresh)}").values()
            self.fresh[key] = segs
            shutil.rmtree(folder)
            shutil.rmtree(self.scratch / f"index-{len(self.fresh) - 1}")
        return self.fresh[key]

    def check_index(self) -> dict[str, list[tuple[Any, np.ndarray]]]:
        got = index_contents(self.index)
        want = {str(p): self.fresh_segments(p) for p in self.files()}
        assert sorted(got) == sorted(want), (
            f"index files differ: extra {sorted(set(got) - set(want))}, "
            f"missing {sorted(set(want) - set(got))}"
        )
        for path, segs in want.items():
            assert [r for r, _ in got[path]] == [r for r, _ in segs], f"{path}: segments differ"
            for (row, a), (_, b) in zip(got[path], segs, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-6, err_msg=f"{path} {row}")
        # the FAISS files hold exactly the manifest's segments
        with IndexStore.open_existing(self.index) as store:
            for modality in ("audio", "visual"):
                live = {
                    sid
                    for sid in _segment_ids(self.index, modality)  # manifest ids
                }
                q = np.ones((1, self.model.dim), np.float32)
                _, ids = store.search(modality, q, max(1, len(live)))
                assert {int(i) for i in ids[0] if i >= 0} == live, f"{modality}: FAISS != manifest"
        return got

    def check_query(self, contents: dict[str, Any]) -> None:
        if not contents:
            return
        query = Path(self.rng.choice(sorted(contents)))
        target = self.rng.choice([None, "audio", "visual"])
        try:
            result = run_query(
                query,
                self.index,
                QueryConfig(top=10, target=target, segments=self.rng.random() < 0.3),
                model=self.model,  # type: ignore[arg-type]
            )
        except Exception as exc:  # an empty modality is a typed, expected refusal
            from avsearch.errors import EmptyIndexError, MediaError

            assert isinstance(exc, (EmptyIndexError, MediaError)), repr(exc)
            return
        for hit in result.results:
            assert Path(hit.path).exists(), f"query named a file that is gone: {hit.path}"
            assert hit.path in contents


def _segment_ids(index: Path, modality: str) -> set[int]:
    import sqlite3

    conn = sqlite3.connect(f"file:{index / 'manifest.sqlite'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id FROM segments WHERE modality = ?", (modality,))
        return {int(r[0]) for r in rows}
    finally:
        conn.close()


def _expect(op: str, summary: EmbedSummary, n_files: int) -> None:
    """What an embed right after one operation must have done."""
    assert summary.failures == [], summary.failures
    if op == "rename":
        assert (summary.moved, summary.new, summary.updated) == (1, 0, 0), summary
    elif op == "delete":
        assert summary.removed == 1 and summary.new == summary.updated == 0, summary
    elif op == "add":
        assert summary.new + summary.moved == 1 and summary.updated == 0, summary
    elif op in ("edit", "rewrite"):
        assert summary.updated == 1 and summary.new == 0, summary
    elif op == "embed":
        assert summary.unchanged == n_files and summary.new == summary.updated == 0, summary


@pytest.mark.parametrize(
    ("large", "default_cycles"),
    # the fast lane runs a short soak; the full lane (CI) the long ones
    [
        (False, 150),
        pytest.param(False, 600, marks=pytest.mark.slow),
        pytest.param(True, 200, marks=pytest.mark.slow),
    ],
    ids=["short", "small", "large"],
)
def test_soak(large: bool, default_cycles: int, tmp_path: Path) -> None:
    cycles = CYCLES or default_cycles
    rng = random.Random(SEED + int(large))
    soak = Soak(
        tmp_path / "media", tmp_path / "index", tmp_path / "scratch", FakeModel(), rng, large
    )
    for _ in range(6):
        soak.op_add()
    for _ in range(2 if large else 0):
        soak.write_wav(soak.new_name(".wav"), big=True)
    embed([soak.root], soak.index, soak.model)
    soak.check_index()
    ops: dict[str, Callable[[], str]] = {
        "add": soak.op_add,
        "delete": soak.op_delete,
        "rename": soak.op_rename,
        "edit": soak.op_edit,
        "rewrite": soak.op_rewrite,
        "embed": lambda: "embed",
        "query": lambda: "query",
    }
    weights = [3, 2, 3, 3, 1, 1, 2]
    t0 = time.perf_counter()
    for cycle in range(cycles):
        n = len(soak.files())
        op = rng.choices(list(ops), weights)[0]
        if op == "delete" and n <= 3:
            op = "add"
        if op == "add" and n >= 14:
            op = "delete"
        op = ops[op]()  # what was done (an edit with nothing to edit adds a file)
        soak.ops[op] = soak.ops.get(op, 0) + 1
        if op != "query":
            summary = embed(
                [soak.root],
                soak.index,
                soak.model,
                workers=rng.randint(1, 3),
                batch_size=rng.randint(1, 16),
            )
            try:
                _expect(op, summary, len(soak.files()))
            except AssertionError as exc:
                raise AssertionError(f"cycle {cycle} ({op}): {exc}") from exc
        try:
            contents = soak.check_index()
            soak.check_query(contents)
        except AssertionError as exc:
            raise AssertionError(f"cycle {cycle} ({op}, seed {SEED}): {exc}") from exc
    elapsed = time.perf_counter() - t0
    print(
        f"\nsoak {'large' if large else 'small'}: {cycles} cycles in {elapsed:.1f} s "
        f"(seed {SEED}; ops {dict(sorted(soak.ops.items()))}; "
        f"{len(soak.fresh)} distinct contents)"
    )
