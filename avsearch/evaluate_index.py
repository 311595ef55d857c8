"""Evaluate an index: rank every labelled segment of one modality against the other.

Labels come from a CSV of ``path,label`` rows or, by default, from each indexed file's parent
folder name (``digits/3/clip.wav`` → ``3``). Every segment inherits its file's label; segments of
files without a label are left out and counted. The metrics themselves live in
:mod:`avsearch.evaluate`; this module only loads the index and attaches labels.

Labels CSV: UTF-8 (a BOM is fine), two columns ``path,label``; a first row that reads
``path,label`` (any case) is a header. A header naming a ``path`` and a ``label`` (or ``concept``)
column among others (a catalogue such as ``path,concept,licence,...``) picks those two columns
and the rows must have as many cells as the header. Blank lines are skipped. A relative path is
resolved against the CSV's own folder. Rows naming files that are not in the index are fine;
they are counted (``n_csv_rows_not_in_index``). A row without exactly two non-empty cells, or a
path given twice with different labels, is a usage error that names the line.

Ranking: in the heads' space; fused with the zero-shot bridge when the index holds bridge
vectors for every segment and the model's fusion rule (recorded with the index) is on, as
``query`` ranks (:mod:`avsearch.spaces`): per query, ``z(heads) + w(q) * z(bridge)`` with both
cosines z-scored over the gallery being ranked (the labelled segments of the other modality)
and ``w(q)`` from the query's best heads cosine in it. ``bridge=False`` (``--no-bridge``): the
heads alone.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.encoders.bridge import FusionRule
from avsearch.errors import AvsearchError, EmptyIndexError, UsageError
from avsearch.evaluate import RetrievalReport, ScoreFn, evaluate_cross_modal
from avsearch.spaces import BRIDGE, FUSED, complete_slot, lacking_note, recorded_fusion
from avsearch.store.index import MODALITIES, IndexStore
from avsearch.store.manifest import HEADS

FOLDER_SOURCE = "folders"
CSV_SOURCE = "csv"


@dataclass(frozen=True)
class LabelledEmbeddings:
    """The labelled segment vectors of both modalities, as passed to the metrics."""

    audio_emb: np.ndarray
    audio_labels: np.ndarray
    visual_emb: np.ndarray
    visual_labels: np.ndarray


@dataclass(frozen=True)
class IndexEvaluation:
    """The report of :func:`evaluate_cross_modal` plus what was left out and where labels came
    from. ``data`` holds the arrays that were evaluated and ``scores`` the fused rankings when
    it fused (for plots: the same ranking as the report); neither is in ``to_json``."""

    report: RetrievalReport
    n_unlabeled_audio: int
    n_unlabeled_visual: int
    label_source: str  # "folders" or "csv"
    labels_csv: Path | None
    n_csv_rows_not_in_index: int
    data: LabelledEmbeddings
    space: str = HEADS  # "heads" or "heads+bridge"
    fusion: dict[str, Any] | None = None  # the rule, when fused
    space_note: str | None = None  # why the bridge was not fused, when it could not be
    scores: dict[str, ScoreFn] | None = None  # the fused rankings by direction (not in JSON)

    def to_json(self) -> dict[str, Any]:
        out = self.report.to_json()
        out.update(
            {
                "n_unlabeled_audio": self.n_unlabeled_audio,
                "n_unlabeled_visual": self.n_unlabeled_visual,
                "label_source": self.label_source,
                "labels_csv": None if self.labels_csv is None else str(self.labels_csv),
                "n_csv_rows_not_in_index": self.n_csv_rows_not_in_index,
                "space": self.space,
            }
        )
        if self.fusion is not None:
            out["fusion"] = self.fusion
        if self.space_note:
            out["space_note"] = self.space_note
        return out


def _key(path: str | Path) -> str:
    return os.path.normpath(str(path))


def read_labels_csv(path: Path) -> dict[str, str]:
    """``{absolute normalised path: label}`` from a ``path,label`` CSV (see module docstring)."""
    path = path.expanduser()
    if not path.is_file():
        raise UsageError(f"labels file {path} does not exist", hint="check --labels")
    base = path.resolve().parent
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            first = True
            columns = (0, 1)  # where path and label are: a header may say otherwise
            width = 2
            for row in reader:
                line = reader.line_num
                cells = [c.strip() for c in row]
                if not any(cells):
                    continue
                header = _header_columns(cells) if first else None
                first = False
                if header is not None:
                    columns, width = header, len(cells)
                    continue
                if len(cells) == width and width > 2:
                    cells = [cells[columns[0]], cells[columns[1]]]
                if len(cells) != 2 or not cells[0] or not cells[1]:
                    raise UsageError(
                        f"{path}, line {line}: expected two non-empty cells `path,label`, "
                        f"got {row!r}",
                        hint="one file per row: path,label (a first row `path,label` is a header)",
                    )
                file_path = Path(cells[0]).expanduser()
                key = _key(file_path if file_path.is_absolute() else base / file_path)
                if key in labels and labels[key] != cells[1]:
                    raise UsageError(
                        f"{path}, line {line}: {cells[0]} is labelled {cells[1]!r} but line "
                        f"{first_line[key]} labels it {labels[key]!r}"
                    )
                labels[key] = cells[1]
                first_line.setdefault(key, line)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    except csv.Error as exc:
        raise UsageError(f"{path}: not a valid CSV file ({exc})") from exc
    if not labels:
        raise UsageError(f"labels file {path} has no `path,label` rows")
    return labels


LABEL_COLUMNS = ("label", "concept")


def _header_columns(cells: list[str]) -> tuple[int, int] | None:
    """(path column, label column) when ``cells`` is a header row naming ``path`` and
    ``label`` (or ``concept``), e.g. ``path,label`` or a catalogue's ``path,concept,licence``."""
    names = [c.lower() for c in cells]
    if "path" not in names:
        return None
    label = next((names.index(n) for n in LABEL_COLUMNS if n in names), None)
    return None if label is None else (names.index("path"), label)


def folder_label(path: str) -> str | None:
    """The name of the folder a file lies in, or None at the file-system root."""
    return Path(path).parent.name or None


def _lookup(labels: dict[str, str], path: str) -> str | None:
    found = labels.get(_key(path))
    if found is None:
        resolved = _key(Path(path).resolve())  # the CSV may name the file through a symlink
        found = labels.get(resolved)
    return found


def fused_scores(
    q_heads: np.ndarray,
    g_heads: np.ndarray,
    q_bridge: np.ndarray,
    g_bridge: np.ndarray,
    rule: FusionRule,
) -> ScoreFn:
    """Query rows -> ``z(heads) + w(q) * z(bridge)`` against the whole gallery (z over the
    gallery per query, ``w`` from each query's best heads cosine)."""

    def score(rows: np.ndarray) -> np.ndarray:
        sh = q_heads[rows].astype(np.float64) @ g_heads.T.astype(np.float64)
        sb = q_bridge[rows].astype(np.float64) @ g_bridge.T.astype(np.float64)
        w = rule.weight_for(sh.max(axis=1, keepdims=True))
        out: np.ndarray = _z(sh) + w * _z(sb)
        return out

    return score


def _z(s: np.ndarray) -> np.ndarray:
    sd = s.std(axis=1, keepdims=True)
    out: np.ndarray = (s - s.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    return out


def evaluate_index(
    index_dir: Path,
    labels_csv: Path | None = None,
    *,
    ks: tuple[int, ...] = (1, 5, 10),
    bridge: bool = True,
) -> IndexEvaluation:
    """Cross-modal MAP, MAP@R and recall@k of every labelled segment in the index (ranked as
    the module docstring says; ``bridge=False``: the heads alone).

    Raises NoIndexError/SchemaError for a missing or unreadable index, EmptyIndexError when a
    modality has no segments at all, UsageError for a bad labels CSV or when a modality has no
    labelled segment or the two modalities share no label.
    """
    csv_labels = read_labels_csv(labels_csv) if labels_csv is not None else None
    used_csv_keys: set[str] = set()
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    bridged: dict[str, np.ndarray] = {}
    unlabeled: dict[str, int] = {}
    space_note = None
    with IndexStore.open_existing(index_dir) as store:
        dim = store.dim
        rule = recorded_fusion(store)
        fuse = bridge and rule.on and all(store.slot_dim(m, BRIDGE) for m in MODALITIES)
        if fuse and not all(complete_slot(store, m, BRIDGE) for m in MODALITIES):
            m = next(m for m in MODALITIES if not complete_slot(store, m, BRIDGE))
            fuse, space_note = False, f"no bridge fusion: {lacking_note(store, m, BRIDGE)}"
        for modality in MODALITIES:
            ids, vecs = store.manifest.vectors(modality, dim)
            if len(ids) == 0:
                raise EmptyIndexError(
                    f"the index at {index_dir} has no {modality} segments; eval ranks audio "
                    "against visual segments, so it needs both",
                    hint="embed media of both kinds: videos, or audio files and images",
                )
            rows = store.manifest.segments_by_ids(ids.tolist())
            file_labels: dict[str, str | None] = {}
            labels: list[str | None] = []
            for seg_id in ids.tolist():
                p = rows[seg_id].path
                if p not in file_labels:
                    if csv_labels is None:
                        file_labels[p] = folder_label(p)
                    else:
                        file_labels[p] = _lookup(csv_labels, p)
                        if file_labels[p] is not None:
                            used_csv_keys.add(_key(p))
                            used_csv_keys.add(_key(Path(p).resolve()))
                labels.append(file_labels[p])
            keep = np.array([lab is not None for lab in labels], dtype=bool)
            unlabeled[modality] = int((~keep).sum())
            if not keep.any():
                source = f"the labels file {labels_csv}" if labels_csv else "folder names"
                raise UsageError(
                    f"none of the {len(ids)} {modality} segments in the index has a label "
                    f"(labels from {source})",
                    hint="pass --labels CSV with rows `path,label` naming indexed files",
                )
            arrays[modality] = (
                vecs[keep],
                np.array([lab for lab in labels if lab is not None], dtype=str),
            )
            if fuse:
                b_dim = store.slot_dim(modality, BRIDGE) or 0
                b_ids, b_vecs = store.manifest.vectors(modality, b_dim, space=BRIDGE)
                if not np.array_equal(b_ids, ids):
                    raise AvsearchError(f"{index_dir}: the bridge vectors changed while read")
                bridged[modality] = b_vecs[keep]
    (a_emb, a_lab), (v_emb, v_lab) = arrays["audio"], arrays["visual"]
    if not set(a_lab.tolist()) & set(v_lab.tolist()):
        raise UsageError(
            "the audio and visual segments share no label, so no query has a relevant item",
            hint="check that both modalities are labelled with the same class names",
        )
    scores: dict[str, ScoreFn] | None = None
    if bridged:
        a_n, v_n = _unit(a_emb), _unit(v_emb)
        a_b, v_b = bridged["audio"], bridged["visual"]
        scores = {
            "a2v": fused_scores(a_n, v_n, a_b, v_b, rule),
            "v2a": fused_scores(v_n, a_n, v_b, a_b, rule),
        }
    try:
        report = evaluate_cross_modal(a_emb, a_lab, v_emb, v_lab, ks=ks, scores=scores)
    except ValueError as exc:
        raise AvsearchError(f"cannot evaluate the index at {index_dir}: {exc}") from exc
    not_in_index = 0 if csv_labels is None else len(set(csv_labels) - used_csv_keys)
    return IndexEvaluation(
        report=report,
        n_unlabeled_audio=unlabeled["audio"],
        n_unlabeled_visual=unlabeled["visual"],
        label_source=FOLDER_SOURCE if csv_labels is None else CSV_SOURCE,
        labels_csv=None if labels_csv is None else labels_csv.expanduser().resolve(),
        n_csv_rows_not_in_index=not_in_index,
        data=LabelledEmbeddings(a_emb, a_lab, v_emb, v_lab),
        space=FUSED if bridged else HEADS,
        fusion=rule.to_config() if bridged else None,
        space_note=space_note,
        scores=scores,
    )


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = x / np.where(n > 0, n, 1.0)
    return out
