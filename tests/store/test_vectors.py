from pathlib import Path

import numpy as np

from avsearch.store import vectors as vx


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_index_choice_is_a_pure_function_of_size() -> None:
    assert vx.choose_index_spec(10, 128).kind == "flat"
    assert vx.choose_index_spec(99_999, 128).kind == "flat"
    assert vx.choose_index_spec(100_000, 128) == vx.IndexSpec("ivf", "IVF256,Flat", nprobe=16)
    assert vx.choose_index_spec(1_000_000, 128) == vx.IndexSpec("ivf", "IVF1024,Flat", nprobe=32)
    spec = vx.choose_index_spec(10_000_000, 128)
    assert spec == vx.IndexSpec("ivf", "IVF4096,SQ8", nprobe=128)


def test_flat_search_is_exact_and_uses_segment_ids(tmp_path: Path) -> None:
    x = _unit(200, 16)
    ids = np.arange(1000, 1200, dtype=np.int64)
    index = vx.build_index(ids, x)
    vx.save_index(index, tmp_path / "a.faiss")
    loaded = vx.load_index(tmp_path / "a.faiss")
    scores, found = vx.search(loaded, x[:5], 3)
    assert found[:, 0].tolist() == ids[:5].tolist()
    brute = x[:5] @ x.T
    np.testing.assert_allclose(scores, -np.sort(-brute, axis=1)[:, :3], rtol=1e-5)
    assert not list(tmp_path.glob("*.tmp"))


def test_hnsw_recall_is_high_on_a_small_set() -> None:
    x = _unit(3000, 32, 1)
    index = vx.build_index(np.arange(3000), x, vx.IndexSpec("hnsw", "HNSW32", ef_search=128))
    q = _unit(50, 32, 2)
    _, found = vx.search(index, q, 10)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
    assert recall > 0.9


def test_empty_index_search() -> None:
    index = vx.build_index(np.zeros(0, np.int64), np.zeros((0, 8), np.float32))
    scores, ids = vx.search(index, _unit(2, 8), 5)
    assert scores.shape == (2, 0) and ids.shape == (2, 0)


def test_sidecar_roundtrip_and_corruption(tmp_path: Path) -> None:
    info = {"audio": vx.IndexInfo(3, 10, 128, "flat", "Flat")}
    vx.write_sidecar(tmp_path / "v.json", info)
    assert vx.read_sidecar(tmp_path / "v.json") == info
    (tmp_path / "v.json").write_text("{broken")
    assert vx.read_sidecar(tmp_path / "v.json") == {}
