from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from avsearch.errors import ModelMismatchError, NoIndexError
from avsearch.store.index import IndexStore, ModelStamp
from avsearch.store.manifest import NewSegment

STAMP = ModelStamp("m1", "f" * 64, 4)


def _add(store: IndexStore, path: str, value: float) -> None:
    v = np.zeros(4, np.float32)
    v[int(value) % 4] = 1.0
    store.manifest.put_file(
        path=path,
        kind="audio",
        size=1,
        mtime_ns=1,
        digest=path,
        segments=[NewSegment("audio", 0, 0.0, 1.0, v)],
    )


def test_missing_index_is_exit_code_3(tmp_path: Path) -> None:
    with pytest.raises(NoIndexError) as info:
        IndexStore.open_existing(tmp_path / "nothing")
    assert info.value.exit_code == 3


def test_other_model_is_refused_unless_rebuild(tmp_path: Path) -> None:
    IndexStore.create_or_open(tmp_path, STAMP).close()
    other = ModelStamp("m2", "e" * 64, 4)
    with pytest.raises(ModelMismatchError) as info:
        IndexStore.create_or_open(tmp_path, other)
    assert info.value.exit_code == 3 and "--rebuild" in str(info.value)
    with IndexStore.create_or_open(tmp_path, other, rebuild=True) as store:
        assert store.model_stamp().name == "m2"


def test_vectors_follow_the_manifest_generation(tmp_path: Path) -> None:
    with IndexStore.create_or_open(tmp_path, STAMP) as store:
        _add(store, "/a.wav", 0)
        store.sync_vectors()
        _add(store, "/b.wav", 1)  # committed, but FAISS not rewritten: a crash here...
    with IndexStore.open_existing(tmp_path) as store:  # ...is repaired by the next reader
        assert store.index_for("audio").ntotal == 2
        _, ids = store.search("audio", np.array([[0, 1, 0, 0]], np.float32), 1)
        assert store.manifest.segments_by_ids(ids[0])[int(ids[0][0])].path == "/b.wav"


def test_an_index_path_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    from avsearch.errors import UsageError
    from avsearch.store.features import FeatureCache

    target = tmp_path / "notes.txt"
    target.write_text("not an index")
    attempts: list[tuple[Path, Callable[[Path], object]]] = [
        (target, lambda r: IndexStore.create_or_open(r, STAMP)),  # embed
        (target / "sub", lambda r: IndexStore.create_or_open(r, STAMP)),
        (target, IndexStore.open_existing),  # query, eval, index stats
        (target, lambda r: FeatureCache(r / "features.sqlite")),  # train's feature cache
    ]
    for root, open_it in attempts:
        with pytest.raises(UsageError) as info:
            open_it(root)
        assert info.value.exit_code == 2
        assert str(root) in info.value.message and "--index" in (info.value.hint or "")
    assert target.read_text() == "not an index"  # left alone


def test_another_version_of_the_same_model_says_so_and_how_to_re_encode(tmp_path: Path) -> None:
    IndexStore.create_or_open(tmp_path, STAMP).close()
    retrained = ModelStamp(STAMP.name, "a" * 64, STAMP.dim)
    with pytest.raises(ModelMismatchError) as info:
        IndexStore.create_or_open(tmp_path, retrained)
    text = f"{info.value} {info.value.hint}"
    assert f"another version of model {STAMP.name!r}" in text
    assert f"fingerprint {STAMP.fingerprint[:12]}…" in text and "aaaaaaaaaaaa…" in text
    assert f"--model {STAMP.name} --rebuild" in text and "feature cache" in text
    assert "query with" not in text  # (the same name: naming it again would not help)
