"""Further vector spaces through the stages: the mapper computes them from the features of the
same batch (decoded or cached, never for silence, no second tower call), the index writer
stores them and refuses a non-finite one, and the plan re-encodes files that lack a space."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avsearch.media.decode import Piece
from avsearch.media.discover import MediaFile
from avsearch.stages.mapper import Mapped, Mapper
from avsearch.stages.reader import REFRESH, Job, plan
from avsearch.stages.writers import EmbedSummary, IndexWriter
from avsearch.store.features import CachedWindow
from avsearch.store.index import IndexStore, ModelStamp
from avsearch.store.manifest import NewSegment

SPACES = {"native": {"audio": 2, "visual": 2, "id": "n"}, "bridge": {"off": "none"}}


class SpacedTower:
    """features = the first 3 samples; heads = features + 1; native = features[:2] * 10."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def features(self, modality: str, batch: np.ndarray) -> np.ndarray:
        self.calls.append(("features", len(batch)))
        return np.asarray(batch, np.float32).reshape(len(batch), -1)[:, :3].copy()

    def project(self, modality: str, feats: np.ndarray) -> np.ndarray:
        self.calls.append(("project", len(feats)))
        return feats + 1

    def embed(self, modality: str, batch: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise AssertionError("a model with spaces maps through features + project")

    def space_vectors(self, modality: str, feats: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append(("spaces", len(feats)))
        return {"native": np.asarray(feats)[:, :2] * 10}


def _piece(k: int, value: float, silent: bool = False) -> Piece:
    return Piece("audio", k, float(k), k + 1.0, np.full(4, value, np.float32), silent=silent)


def test_the_mapper_computes_spaces_from_the_same_features() -> None:
    tower = SpacedTower()
    out: list[tuple[int, Mapped]] = []
    mapper = Mapper(tower, 8, lambda j, m: out.append((j, m)))
    mapper.add(0, _piece(0, 0.5))
    mapper.add(0, _piece(1, 0.0, silent=True))  # silence: no vector in any space
    mapper.add(0, _piece(2, 0.25))
    mapper.add(1, CachedWindow("audio", 0, 0.0, 1.0, np.array([3.0, 4.0, 5.0]), False))
    mapper.flush()
    assert tower.calls == [("features", 2), ("project", 2), ("spaces", 2), ("project", 1),
                           ("spaces", 1)]  # fmt: skip
    decoded = {m.idx: m for j, m in out if j == 0}
    assert decoded[1].silent and decoded[1].spaces == {}
    np.testing.assert_allclose(decoded[0].vector, [1.5, 1.5, 1.5])
    np.testing.assert_allclose(decoded[0].spaces["native"], [5.0, 5.0])
    np.testing.assert_allclose(decoded[2].spaces["native"], [2.5, 2.5])
    (cached,) = [m for j, m in out if j == 1]
    np.testing.assert_allclose(cached.vector, [4.0, 5.0, 6.0])
    np.testing.assert_allclose(cached.spaces["native"], [30.0, 40.0])
    assert all(m.feature is None for _, m in out)  # not kept: features=False


def test_training_extraction_computes_no_space() -> None:
    tower = SpacedTower()
    out: list[Mapped] = []
    mapper = Mapper(tower, 8, lambda j, m: out.append(m), features=True, heads=False)
    mapper.add(0, _piece(0, 0.5))
    mapper.flush()
    assert tower.calls == [("features", 1)] and out[0].spaces == {}


def _media(tmp_path: Path, name: str) -> MediaFile:
    path = tmp_path / name
    path.write_bytes(name.encode())
    st = path.stat()
    return MediaFile(path.resolve(), "audio", st.st_size, st.st_mtime_ns)


def test_the_writer_stores_spaces_and_refuses_non_finite_ones(tmp_path: Path) -> None:
    stamp = ModelStamp("m", "f" * 64, 3, "m", SPACES)
    f = _media(tmp_path, "a.wav")
    with IndexStore.create_or_open(tmp_path / "i", stamp) as store:
        jobs = [Job(f, "new", "sha256:a")]
        summary = EmbedSummary(index="i", model="m")
        writer = IndexWriter(store.manifest, jobs, summary)
        v = np.ones(3, np.float32)
        writer.take(0, Mapped("audio", 0, 0.0, 1.0, False, vector=v, spaces={"native": v[:2]}))
        bad = {"native": np.array([np.inf, 0.0], np.float32)}
        writer.take(0, Mapped("audio", 1, 1.0, 2.0, False, vector=v, spaces=bad))
        writer.commit([0])
        assert store.manifest.segment_count("audio") == 1
        assert store.manifest.segment_count("audio", "native") == 1
        assert "non-finite" in summary.failures[0].reason
        _, vecs = store.manifest.vectors("audio", 2, space="native")
        np.testing.assert_allclose(vecs, [[1.0, 1.0]])


def test_plan_refreshes_unchanged_files_that_lack_a_space(tmp_path: Path) -> None:
    stamp = ModelStamp("m", "f" * 64, 3, "m", SPACES)
    a, b = _media(tmp_path, "a.wav"), _media(tmp_path, "b.wav")
    with IndexStore.create_or_open(tmp_path / "i", stamp) as store:
        v = np.ones(3, np.float32)
        ids = {}
        for f, spaces in ((a, {"native": v[:2]}), (b, {})):
            ids[f.path.name] = store.manifest.put_file(
                path=str(f.path), kind="audio", size=f.size, mtime_ns=f.mtime_ns,
                digest=f"sha256:{f.path.name}",
                segments=[NewSegment("audio", 0, 0.0, 1.0, v, spaces)],
            )  # fmt: skip
        lacking = store.manifest.files_lacking(store.slots())
        assert lacking == {ids["b.wav"]}
        p = plan(store.manifest, [a, b], [tmp_path])
        assert p.jobs == [] and p.unchanged == 2
        p = plan(store.manifest, [a, b], [tmp_path], lacking)
        assert [(j.file.path.name, j.action, j.replace_id) for j in p.jobs] == [
            ("b.wav", REFRESH, ids["b.wav"])
        ]
        assert p.jobs[0].digest == "sha256:b.wav" and p.unchanged == 1


def test_a_refreshed_file_is_tallied_apart(tmp_path: Path) -> None:
    stamp = ModelStamp("m", "f" * 64, 3, "m", SPACES)
    f = _media(tmp_path, "a.wav")
    with IndexStore.create_or_open(tmp_path / "i", stamp) as store:
        summary = EmbedSummary(index="i", model="m")
        writer = IndexWriter(store.manifest, [Job(f, REFRESH, "sha256:a")], summary)
        v = np.ones(3, np.float32)
        writer.take(0, Mapped("audio", 0, 0.0, 1.0, False, vector=v, spaces={"native": v[:2]}))
        writer.commit([0])
        assert (summary.refreshed, summary.updated, summary.new) == (1, 0, 0)
        assert summary.to_json()["files"]["refreshed"] == 1
