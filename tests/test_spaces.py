"""Which space answers a search, and heads + bridge fusion, on tiny seeded indexes: the fusion
maths against a brute-force reference, the gate, the union of candidates (the path of large
galleries), and eval's fused ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avsearch import spaces as sp
from avsearch.encoders import bridge as br
from avsearch.errors import UsageError
from avsearch.evaluate import evaluate_cross_modal
from avsearch.evaluate_index import evaluate_index
from avsearch.store.index import IndexStore, ModelStamp
from avsearch.store.manifest import NewSegment

DIM, NAT, BR = 6, 5, 4
SPACES = {
    "native": {"audio": NAT, "visual": NAT, "id": "n"},
    "bridge": {"audio": BR, "visual": BR, "id": "b", "fusion": {"bridge": "gated"}},
}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _build(root: Path, spaces: dict = SPACES, n_files: int = 12, seed: int = 0) -> Path:
    """Files in two class folders; each has 2 audio and 1 visual segment in every space."""
    rng = np.random.default_rng(seed)
    with IndexStore.create_or_open(root, ModelStamp("m", "f" * 64, DIM, "m", spaces)) as store:
        for i in range(n_files):
            segs = []
            for modality, n in (("audio", 2), ("visual", 1)):
                for j in range(n):
                    extra = {
                        "native": _unit(rng.normal(size=NAT)),
                        "bridge": _unit(rng.normal(size=BR)),
                    }
                    segs.append(
                        NewSegment(modality, j, j, j + 1.0, _unit(rng.normal(size=DIM)), extra)
                    )
            store.manifest.put_file(
                path=f"/m/c{i % 2}/f{i}.mp4", kind="video", size=1, mtime_ns=1,
                digest=f"sha256:{i}", segments=segs,
            )  # fmt: skip
        store.sync_vectors()
    return root


def _brute(store: IndexStore, target: str, qh: np.ndarray, qb: np.ndarray, rule: br.FusionRule):
    ids, h = store.manifest.vectors(target, DIM)
    _, b = store.manifest.vectors(target, BR, space="bridge")
    sh, sb = h @ qh.ravel(), b @ qb.ravel()
    w = float(rule.weight_for(sh.max()))
    fused = br.zscore_fuse([sh[None], sb[None]], [1.0, w], axis=1)[0]
    order = np.argsort(-fused, kind="stable")
    return fused[order], ids[order], w


# --------------------------------------------------------------------------------- the maths
def test_fuse_is_the_documented_z_sum() -> None:
    rng = np.random.default_rng(1)
    h, b = rng.normal(size=50), rng.normal(size=50)
    got = sp.fuse(h, b, (h.mean(), h.std()), (b.mean(), b.std()), 2.5)
    np.testing.assert_allclose(got, br.zscore_fuse([h, b], [1.0, 2.5]), atol=1e-12)
    np.testing.assert_allclose(sp.fuse(h, b, (h.mean(), 0.0), (0.0, 1.0), 0.0), h - h.mean())


def test_union_of_candidates() -> None:
    got = sp.union_candidates(np.array([[5, 3, -1]]), np.array([[3, 9, 1]]))
    assert got.tolist() == [1, 3, 5, 9]
    assert sp.union_candidates().tolist() == []


@pytest.mark.parametrize("top", [0.3, 0.65, 0.9])
def test_fused_search_equals_brute_force(tmp_path: Path, top: float) -> None:
    root = _build(tmp_path / "i")
    rng = np.random.default_rng(2)
    rule = br.FusionRule(low=top - 0.1, high=top + 0.1) if top != 0.9 else br.FusionRule()
    with IndexStore.open_existing(root) as store:
        qh, qb = _unit(rng.normal(size=(1, DIM))), _unit(rng.normal(size=(1, BR)))
        fused = sp.FusedSearch(store, "visual", qh, qb, rule)
        assert fused.exact
        want_scores, want_ids, w = _brute(store, "visual", qh, qb, rule)
        scores, ids = fused(100)
        np.testing.assert_allclose(scores[0], want_scores, atol=1e-5)
        assert ids[0].tolist() == want_ids.tolist()
        assert fused.weight == pytest.approx(w)
        assert fused(3)[1].shape == (1, 3)


def test_the_candidate_path_ranks_the_union_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Galleries beyond Flat: stats from a sample (here all of it) and the fused score of the
    union of both spaces' candidates; with k covering the gallery it equals brute force, with
    a small k its ranking is that of the union."""
    root = _build(tmp_path / "i", n_files=20)
    monkeypatch.setattr(sp, "flat_gallery", lambda index: None)
    rng = np.random.default_rng(3)
    rule = br.FusionRule()
    with IndexStore.open_existing(root) as store:
        qh, qb = _unit(rng.normal(size=(1, DIM))), _unit(rng.normal(size=(1, BR)))
        fused = sp.FusedSearch(store, "audio", qh, qb, rule)
        assert not fused.exact
        want_scores, want_ids, _ = _brute(store, "audio", qh, qb, rule)
        scores, ids = fused(1000)
        assert ids[0].tolist() == want_ids.tolist()
        np.testing.assert_allclose(scores[0], want_scores, atol=1e-5)
        _, ids_h = store.search("audio", qh, 4)
        _, ids_b = store.search("audio", qb, 4, "bridge")
        union = set(sp.union_candidates(ids_h, ids_b).tolist())
        _, small = fused(4)
        assert set(small[0].tolist()) <= union
        rank = [i for i in want_ids.tolist() if i in union][:4]
        assert small[0].tolist() == rank


@pytest.mark.parametrize(("gate_top", "weight"), [(0.2, 4.0), (0.6, 2.0), (0.9, 0.0)])
def test_same_modality_fuses_native_by_the_gate(
    tmp_path: Path, gate_top: float, weight: float
) -> None:
    """heads + native for a same-modality query: the weight comes from the given gate input
    (the query's best cosine with the other modality), not from its own gallery, and a rule
    whose bridge is off still gates the native space."""
    root = _build(tmp_path / "i")
    rng = np.random.default_rng(4)
    rule = br.FusionRule(bridge="off")
    with IndexStore.open_existing(root) as store:
        qh, qn = _unit(rng.normal(size=(1, DIM))), _unit(rng.normal(size=(1, NAT)))
        fused = sp.FusedSearch(store, "audio", qh, qn, rule, other="native", gate_top=gate_top)
        assert fused.weight == pytest.approx(weight) and fused.heads_top == gate_top
        ids, h = store.manifest.vectors("audio", DIM)
        _, n = store.manifest.vectors("audio", NAT, space="native")
        want = br.zscore_fuse([(h @ qh.ravel())[None], (n @ qn.ravel())[None]], [1.0, weight],
                              axis=1)[0]  # fmt: skip
        scores, found = fused(1000)
        assert found[0].tolist() == ids[np.argsort(-want, kind="stable")].tolist()
        np.testing.assert_allclose(scores[0], np.sort(want)[::-1], atol=1e-5)
        assert "native_weight" in fused.to_json()
        top, _ = store.search("visual", qh, 1)
        assert sp.cross_top(store, "visual", qh) == pytest.approx(float(top[0, 0]))


# --------------------------------------------------------------------------------- the choice
def test_choose_space(tmp_path: Path) -> None:
    root = _build(tmp_path / "i")
    with IndexStore.open_existing(root) as store:
        assert sp.choose_space(store, "audio", "audio") == sp.SpaceChoice("heads+native")
        assert sp.choose_space(store, "audio", "audio", "native").space == "native"
        assert sp.choose_space(store, "audio", "audio", "heads").space == "heads"
        assert sp.choose_space(store, "audio", "visual").space == "heads+bridge"
        assert sp.choose_space(store, "audio", "visual", bridge=False).space == "heads"
        assert sp.choose_space(store, "audio", "visual", "heads") == sp.SpaceChoice("heads")
        off = br.FusionRule(bridge="off")
        assert sp.choose_space(store, "visual", "audio", fusion=off).space == "heads"
        with pytest.raises(UsageError, match="one modality"):
            sp.choose_space(store, "audio", "visual", "native")
        with pytest.raises(UsageError, match="heads or native"):
            sp.choose_space(store, "audio", "audio", "bridge")


def test_without_spaces_same_modality_falls_back_with_a_note(tmp_path: Path) -> None:
    spaces = {"native": {"off": "no native.safetensors"}, "bridge": {"off": "no soundnet"}}
    root = _build(tmp_path / "i", spaces=spaces)
    with IndexStore.open_existing(root) as store:
        choice = sp.choose_space(store, "visual", "visual")
        assert choice.space == "heads" and "no native.safetensors" in (choice.note or "")
        assert sp.choose_space(store, "audio", "visual") == sp.SpaceChoice("heads")
        with pytest.raises(UsageError, match="no native visual space"):
            sp.choose_space(store, "visual", "visual", "native")


# --------------------------------------------------------------------------------- eval
def test_eval_fuses_by_the_recorded_rule(tmp_path: Path) -> None:
    root = _build(tmp_path / "i")
    fused = evaluate_index(root)
    plain = evaluate_index(root, bridge=False)
    assert fused.space == "heads+bridge" and fused.to_json()["fusion"]["bridge"] == "gated"
    assert plain.space == "heads" and "fusion" not in plain.to_json()
    with IndexStore.open_existing(root) as store:
        vec = {
            (m, s): store.manifest.vectors(m, d, space=s)[1] for (s, m), d in store.slots().items()
        }
    a_lab = plain.data.audio_labels
    v_lab = plain.data.visual_labels
    # the same ranking computed by hand: z over the gallery per query, gated by its best cosine
    rule = br.FusionRule()

    def ref(q_h, g_h, q_b, g_b):
        sh, sb = q_h @ g_h.T, q_b @ g_b.T
        w = rule.weight_for(sh.max(axis=1, keepdims=True))
        return br.zscore_fuse([sh, sb], [1.0, w], axis=1)

    s_a2v = ref(vec["audio", "heads"], vec["visual", "heads"], vec["audio", "bridge"],
                vec["visual", "bridge"])  # fmt: skip
    s_v2a = ref(vec["visual", "heads"], vec["audio", "heads"], vec["visual", "bridge"],
                vec["audio", "bridge"])  # fmt: skip
    want = evaluate_cross_modal(
        plain.data.audio_emb, a_lab, plain.data.visual_emb, v_lab,
        scores={"a2v": lambda r: s_a2v[r], "v2a": lambda r: s_v2a[r]},
    )  # fmt: skip
    assert fused.report.a2v_map == pytest.approx(want.a2v_map)
    assert fused.report.v2a_map == pytest.approx(want.v2a_map)
    assert plain.report.a2v_map != pytest.approx(fused.report.a2v_map)


def test_eval_does_not_fuse_an_index_lacking_bridge_vectors(tmp_path: Path) -> None:
    root = _build(tmp_path / "i")
    with IndexStore.create_or_open(root, ModelStamp("m", "f" * 64, DIM, "m", SPACES)) as store:
        rng = np.random.default_rng(5)
        seg = NewSegment("audio", 0, 0.0, 1.0, _unit(rng.normal(size=DIM)))
        store.manifest.put_file(
            path="/m/c0/bare.wav", kind="audio", size=1, mtime_ns=1, digest="sha256:bare",
            segments=[seg],
        )  # fmt: skip
        store.sync_vectors()
    out = evaluate_index(root)
    assert out.space == "heads" and "have no bridge vectors" in (out.space_note or "")


# --------------------------------------------------------------------------------- options
def test_space_option_is_checked(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from avsearch import config as c
    from avsearch.cli import app
    from avsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="heads or native"):
        c.build(c.QueryConfig, {}, {"space": "bridge"})
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"")
    runner = CliRunner()
    result = runner.invoke(app, ["--index", str(tmp_path / "i"), "query", str(clip),
                                 "--space", "bridge"])  # fmt: skip
    assert result.exit_code == 2 and "heads or native" in result.output
    h5 = tmp_path / "f.h5"
    h5.write_bytes(b"")
    result = runner.invoke(app, ["eval", "--features", str(h5), "--model", str(tmp_path),
                                 "--no-bridge"])  # fmt: skip
    assert result.exit_code == 2 and "--no-bridge applies to the index" in result.output


def test_cli_eval_reports_the_space(tmp_path: Path) -> None:
    """`eval --json` and `--no-bridge` through the CLI on a seeded index (no model needed)."""
    import json

    from typer.testing import CliRunner

    from avsearch.cli import app

    root = _build(tmp_path / "i")
    runner = CliRunner()
    fused = runner.invoke(app, ["--json", "--index", str(root), "eval"])
    heads = runner.invoke(app, ["--json", "--index", str(root), "eval", "--no-bridge"])
    assert fused.exit_code == heads.exit_code == 0, fused.output
    assert json.loads(fused.stdout)["space"] == "heads+bridge"
    assert json.loads(heads.stdout)["space"] == "heads"
