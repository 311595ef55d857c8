"""The index directory: manifest + per-modality FAISS files, opened together.

Layout of an index directory (default ``./.avsearch``)::

    manifest.sqlite      files, segments, vectors, schema version, model name + fingerprint
    audio.faiss          FAISS index of audio segment vectors (ids = segment ids)
    visual.faiss         FAISS index of visual segment vectors
    vectors.json         generation/count/type of each FAISS file
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from avsearch.errors import ModelMismatchError, NoIndexError, SchemaError
from avsearch.store import vectors as vx
from avsearch.store.manifest import Manifest

log = logging.getLogger(__name__)

MANIFEST = "manifest.sqlite"
SIDECAR = "vectors.json"
MODALITIES = ("audio", "visual")


@dataclass(frozen=True)
class ModelStamp:
    name: str
    fingerprint: str
    dim: int
    ref: str = ""  # how to load the model again: a shipped model's name or a directory


class IndexStore:
    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest
        self._indexes: dict[str, faiss.Index] = {}

    # ------------------------------------------------------------------------------- opening
    @classmethod
    def create_or_open(cls, root: Path, model: ModelStamp, *, rebuild: bool = False) -> IndexStore:
        """For writing (embed). Refuses an index of another model unless ``rebuild``."""
        root.mkdir(parents=True, exist_ok=True)
        manifest = Manifest(root / MANIFEST)
        manifest.ensure_schema()
        store = cls(root, manifest)
        stamp = store.model_stamp()
        if stamp is None or rebuild:
            with manifest.transaction():
                if stamp is not None:
                    log.info(
                        "rebuilding: dropping %d files encoded with model %s",
                        manifest.file_count(),
                        stamp.name,
                    )
                    manifest.clear()
                manifest.set_meta("model_name", model.name)
                manifest.set_meta("model_fingerprint", model.fingerprint)
                manifest.set_meta("dim", str(model.dim))
                manifest.set_meta("model_ref", model.ref or model.name)
        elif stamp.fingerprint != model.fingerprint:
            manifest.close()
            raise ModelMismatchError(root, stamp.name, model.name)
        return store

    @classmethod
    def open_existing(cls, root: Path) -> IndexStore:
        """For reading (query, eval, stats)."""
        path = root / MANIFEST
        if not path.exists():
            raise NoIndexError(root)
        manifest = Manifest(path)
        version = manifest.schema_version()
        if version == 0:
            manifest.close()
            raise NoIndexError(root)
        if version != 1:
            manifest.ensure_schema()  # raises for newer; migrates older
        store = cls(root, manifest)
        if store.model_stamp() is None:
            manifest.close()
            raise SchemaError(
                f"the index at {root} has no model recorded",
                hint="rebuild it with `avsearch embed PATH --rebuild`",
            )
        return store

    def close(self) -> None:
        self._indexes.clear()
        self.manifest.close()

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def model_stamp(self) -> ModelStamp | None:
        name = self.manifest.get_meta("model_name")
        fp = self.manifest.get_meta("model_fingerprint")
        dim = self.manifest.get_meta("dim")
        if not (name and fp and dim):
            return None
        return ModelStamp(name, fp, int(dim), self.manifest.get_meta("model_ref") or name)

    @property
    def dim(self) -> int:
        stamp = self.model_stamp()
        assert stamp is not None
        return stamp.dim

    # ------------------------------------------------------------------------------- vectors
    def sync_vectors(self, *, force: bool = False) -> dict[str, vx.IndexInfo]:
        """Rebuild each modality's FAISS file if the manifest moved on since it was written."""
        sidecar = self.root / SIDECAR
        infos = vx.read_sidecar(sidecar)
        generation = self.manifest.generation
        changed = False
        for modality in MODALITIES:
            path = self.root / f"{modality}.faiss"
            info = infos.get(modality)
            if not force and info and info.generation == generation and path.exists():
                continue
            ids, vecs = self.manifest.vectors(modality, self.dim)
            spec = vx.choose_index_spec(len(ids), self.dim)
            index = vx.build_index(ids, vecs, spec)
            vx.save_index(index, path)
            infos[modality] = vx.IndexInfo(generation, len(ids), self.dim, spec.kind, spec.factory)
            self._indexes[modality] = index
            changed = True
        if changed:
            vx.write_sidecar(sidecar, infos)
        return infos

    def index_for(self, modality: str) -> faiss.Index:
        if modality not in self._indexes:
            infos = vx.read_sidecar(self.root / SIDECAR)
            info = infos.get(modality)
            path = self.root / f"{modality}.faiss"
            if info is None or info.generation != self.manifest.generation or not path.exists():
                log.info("vector index for %s is stale; rebuilding from the manifest", modality)
                self.sync_vectors()
            if modality not in self._indexes:
                self._indexes[modality] = vx.load_index(path)
        return self._indexes[modality]

    def search(self, modality: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return vx.search(self.index_for(modality), queries, k)
