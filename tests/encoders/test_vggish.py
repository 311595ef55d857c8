"""Tests for the VGGish audio tower: its front-end against a numpy reference written from the
published code (torchvggish ``mel_features.py`` / ``vggish_input.py``) on real audio, the
tower's contract on seeded weights, and loading the public checkpoints' layouts from local
files only."""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly
from torch import nn

from avsearch.encoders import vggish as vg
from avsearch.encoders.files import read_weights_file
from avsearch.encoders.tower import AudioInput, Tower
from avsearch.errors import ModelError
from tests.conftest import shared_path

SPOKEN = ("data", "fsdd", "0_george_0.wav")
DOG = ("data", "natural", "dog", "gcompris-memory-sound-LRBark_3_LA_cut.ogg")


# ----------------------------------------------------------------------------- reference
# Written from torchvggish's mel_features.py and vggish_params.py (Apache-2.0), in float64.
def ref_frame(data: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Whole frames only, no padding (``mel_features.frame``)."""
    count = 1 + (data.shape[0] - window) // hop
    return np.stack([data[i * hop : i * hop + window] for i in range(count)])


def ref_periodic_hann(length: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi / length * np.arange(length))


def ref_hertz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)


def ref_mel_matrix(
    num_mel_bins: int = 64,
    num_spectrogram_bins: int = 257,
    sample_rate: float = 16000.0,
    lower_hz: float = 125.0,
    upper_hz: float = 7500.0,
) -> np.ndarray:
    """``spectrogram_to_mel_matrix``: HTK mel triangles, bins on ``linspace(0, nyquist)``,
    the DC row zeroed."""
    bins_mel = ref_hertz_to_mel(np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins))
    edges = np.linspace(ref_hertz_to_mel(lower_hz), ref_hertz_to_mel(upper_hz), num_mel_bins + 2)
    out = np.empty((num_spectrogram_bins, num_mel_bins))
    for i in range(num_mel_bins):
        lo, centre, hi = edges[i : i + 3]
        lower_slope = (bins_mel - lo) / (centre - lo)
        upper_slope = (hi - bins_mel) / (hi - centre)
        out[:, i] = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    out[0, :] = 0.0
    return out


def ref_log_mel(data: np.ndarray) -> np.ndarray:
    """``log_mel_spectrogram`` with VGGish's parameters: 25 ms / 10 ms at 16 kHz, FFT 512."""
    window_length = round(16000 * 0.025)
    hop_length = round(16000 * 0.010)
    fft_length = 2 ** int(np.ceil(np.log(window_length) / np.log(2.0)))
    frames = ref_frame(data, window_length, hop_length)
    magnitude = np.abs(np.fft.rfft(frames * ref_periodic_hann(window_length), fft_length))
    return np.log(magnitude @ ref_mel_matrix(num_spectrogram_bins=magnitude.shape[1]) + 0.01)


def ref_examples(data: np.ndarray) -> np.ndarray:
    """``waveform_to_examples`` on 16 kHz mono: 96-frame patches every 96 frames."""
    return ref_frame(ref_log_mel(data), 96, 96)


def ref_postprocess(
    emb: np.ndarray, pca_eigen_vectors: np.ndarray, pca_means: np.ndarray
) -> np.ndarray:
    """torchvggish ``Postprocessor``: PCA, clip to [-2, 2], 8-bit quantisation."""
    pca = (pca_eigen_vectors @ (emb.T - pca_means.reshape(-1, 1))).T
    return np.round((np.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0))


def read_16k(parts: tuple[str, ...]) -> np.ndarray:
    import soundfile as sf

    data, rate = sf.read(shared_path(*parts), dtype="float64", always_2d=True)
    mono = data.mean(axis=1)
    g = np.gcd(rate, 16000)
    return resample_poly(mono, 16000 // g, rate // g)


# ----------------------------------------------------------------------------- seeded weights
def seeded_vggish(seed: int = 0) -> vg.VGGish:
    """VGGish with seeded He-scaled weights (activations stay O(1) through the 9 layers)."""
    torch.manual_seed(seed)
    net = vg.VGGish()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.weight.normal_(0.0, (2.0 / module.weight[0].numel()) ** 0.5)
                module.bias.uniform_(-0.05, 0.05)
    return net.eval()


def seeded_pca(seed: int = 1) -> dict[str, np.ndarray]:
    """PCA params as the release holds them: float64 numpy arrays, means ``[128]``."""
    rng = np.random.default_rng(seed)
    eigen, _ = np.linalg.qr(rng.standard_normal((vg.DIM, vg.DIM)))
    return {"pca_eigen_vectors": eigen * 0.5, "pca_means": rng.uniform(0.0, 0.5, vg.DIM)}


def numpy1_pickle(obj: object) -> bytes:
    """``torch.save`` in the legacy (pre-1.6) format, numpy globals under numpy 1.x's names, as
    a 2019 checkpoint holding numpy arrays was written."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def signals(n: int, rows: int = 3, seed: int = 0) -> torch.Tensor:
    """Noise, a gated tone and near-silence, ``[rows, n]`` float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / vg.SAMPLE_RATE
    out = [
        0.1 * rng.standard_normal(n),
        0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 3 * t) > 0),
        1e-4 * rng.standard_normal(n),
    ]
    return torch.from_numpy(np.stack(out[:rows]).astype(np.float32))


@pytest.fixture(scope="module")
def net() -> vg.VGGish:
    return seeded_vggish()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, net: vg.VGGish) -> dict[str, Path]:
    """The seeded weights in the public files' layouts: ``vggish-10086976.pth`` (an
    OrderedDict state dict) and ``vggish_pca_params-970ea276.pth`` (numpy arrays)."""
    root = tmp_path_factory.mktemp("vggish")
    weights = root / vg.WEIGHTS_FILE
    torch.save(OrderedDict(net.net.state_dict()), weights)
    pca = root / vg.PCA_FILE
    pca.write_bytes(numpy1_pickle(seeded_pca()))
    return {"weights": weights, "pca": pca}


# ----------------------------------------------------------------------------- front-end
def test_mel_matrix_matches_reference() -> None:
    np.testing.assert_allclose(vg.mel_matrix(), ref_mel_matrix(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(vg.periodic_hann(400), ref_periodic_hann(400), atol=1e-15)


def test_log_mel_matches_reference_on_speech(net: vg.VGGish) -> None:
    """FSDD digit (8 kHz, 0.3 s): frame by frame, no patch (shorter than one)."""
    audio = read_16k(SPOKEN)
    got = net.log_mel(torch.from_numpy(audio.astype(np.float32))[None])[0].numpy()
    ref = ref_log_mel(audio)
    assert got.shape == ref.shape == (1 + (len(audio) - 400) // 160, 64)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


def test_patches_match_reference_examples_on_dog_bark(net: vg.VGGish) -> None:
    audio = read_16k(DOG)
    ref = ref_examples(audio)
    got = net.patches(torch.from_numpy(audio.astype(np.float32))[None])[0].numpy()
    assert ref.shape[0] >= 2
    # the tower only adds a patch when the row ends within 240 samples after a whole window
    tail = len(audio) % vg.WINDOW_SAMPLES
    assert got.shape[0] == ref.shape[0] + (1 if tail < 240 and len(audio) > 15600 else 0)
    np.testing.assert_allclose(got[: ref.shape[0]], ref, rtol=0, atol=1e-4)


def test_tone_lands_in_its_mel_band(net: vg.VGGish) -> None:
    t = np.arange(vg.WINDOW_SAMPLES) / vg.SAMPLE_RATE
    tone = torch.from_numpy((0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32))
    spec = net.patches(tone[None])[0, 0]  # [96, 64]
    edges = np.linspace(ref_hertz_to_mel(125.0), ref_hertz_to_mel(7500.0), 66)
    centres_hz = 700.0 * (np.exp(edges[1:-1] / 1127.0) - 1.0)
    assert int(spec.mean(0).argmax()) == int(np.abs(centres_hz - 1000.0).argmin())


@pytest.mark.parametrize(
    ("n", "patches"),
    [(0, 1), (400, 1), (15_360, 1), (15_600, 1), (30_719, 1), (30_720, 2), (37_120, 2)],
)
def test_patch_count(net: vg.VGGish, n: int, patches: int) -> None:
    assert vg.n_patches(n) == patches
    assert net.patches(torch.zeros(1, n)).shape == (1, patches, 96, 64)


# ----------------------------------------------------------------------------- tower contract
def test_contract_attributes(net: vg.VGGish) -> None:
    assert (vg.VGGish.SAMPLE_RATE, vg.VGGish.WINDOW_SAMPLES, vg.VGGish.DIM) == (16000, 15360, 128)
    assert isinstance(net, Tower)
    assert net.input == AudioInput(16000, 15360) and (net.modality, net.dim) == ("audio", 128)


def test_network_has_the_public_key_layout(net: vg.VGGish) -> None:
    shapes = {k: tuple(v.shape) for k, v in net.net.state_dict().items()}
    convs = {0: (64, 1), 3: (128, 64), 6: (256, 128), 8: (256, 256), 11: (512, 256)}
    expected = {f"features.{i}.weight": (o, c, 3, 3) for i, (o, c) in convs.items()}
    expected |= {"features.13.weight": (512, 512, 3, 3)}
    expected |= {f"features.{i}.bias": (o,) for i, (o, _) in [*convs.items(), (13, (512, 0))]}
    for i, (o, c) in {0: (4096, 12288), 2: (4096, 4096), 4: (128, 4096)}.items():
        expected |= {f"embeddings.{i}.weight": (o, c), f"embeddings.{i}.bias": (o,)}
    assert shapes == expected
    assert list(net.state_dict()) == [f"net.{k}" for k in shapes]  # no PCA, no front-end


def test_features_is_the_numpy_entry_point(net: vg.VGGish) -> None:
    x = signals(vg.WINDOW_SAMPLES, rows=2)
    with torch.inference_mode():
        expected = net(x).numpy()
    got = net.features(x.numpy().astype(np.float64))
    assert got.dtype == np.float32 and got.shape == (2, vg.DIM)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.features(x[0].numpy()), expected[:1], rtol=1e-5, atol=1e-5)
    assert net.features(np.zeros((0, vg.WINDOW_SAMPLES), np.float32)).shape == (0, vg.DIM)
    with pytest.raises(ValueError, match=r"\[B, n\]"):
        net.features(np.zeros((1, 2, 3), np.float32))


def test_forward_shape_finite_deterministic(net: vg.VGGish) -> None:
    x = signals(2 * vg.WINDOW_SAMPLES)
    with torch.inference_mode():
        a, b = net(x), net(x)
    assert a.shape == (3, vg.DIM) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert (a >= 0).all()  # the port's final ReLU
    assert torch.cdist(a, a).triu(1)[0, 1:].min() > 1e-3  # different sounds, different vectors


def test_batch_independence(net: vg.VGGish) -> None:
    x = signals(vg.WINDOW_SAMPLES, rows=2)
    with torch.inference_mode():
        batch = net(x)
        alone = torch.cat([net(x[i : i + 1]) for i in range(len(x))])
        shuffled = net(x.flip(0)).flip(0)
    # BLAS kernels differ by batch size: float noise reaches 2e-5 on some CPUs (AMD EPYC);
    # a row that depended on its neighbours would differ by far more
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(batch, shuffled, rtol=1e-4, atol=1e-4)


def test_long_row_is_mean_of_its_patches_and_short_row_is_padded(net: vg.VGGish) -> None:
    x = signals(2 * vg.WINDOW_SAMPLES + 240, rows=1)
    with torch.inference_mode():
        whole = net(x)
        first = net(x[:, : vg.PATCH_SAMPLES])
        second = net(x[:, vg.WINDOW_SAMPLES : vg.WINDOW_SAMPLES + vg.PATCH_SAMPLES])
        short = net(x[:, :5000])
        padded = net(torch.nn.functional.pad(x[:, :5000], (0, vg.PATCH_SAMPLES - 5000)))
    torch.testing.assert_close(whole, (first + second) / 2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(short, padded, rtol=0, atol=0)


def test_forward_refuses_wrong_rank(net: vg.VGGish) -> None:
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        net(torch.zeros(vg.WINDOW_SAMPLES))


def test_pca_postprocess_matches_reference() -> None:
    params = seeded_pca()
    pproc = vg.VGGishPCA()
    pproc.load_state_dict({k: torch.from_numpy(v).float() for k, v in params.items()})
    raw = torch.rand(5, vg.DIM, generator=torch.Generator().manual_seed(0)) * 3
    expected = ref_postprocess(raw.double().numpy(), **params)
    got = pproc(raw).numpy()
    assert ((got >= 0) & (got <= 255)).all() and np.array_equal(got, np.round(got))
    # float32 against float64 may round a value sitting on .5 the other way: at most 1 step
    assert np.abs(got - expected).max() <= 1.0 and (got == expected).mean() > 0.99
    pproc.quantize = False
    linear = (params["pca_eigen_vectors"] @ (raw.double().numpy() - params["pca_means"]).T).T
    np.testing.assert_allclose(pproc(raw).numpy(), linear, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- loading
@pytest.mark.slow
def test_public_layouts_load_strictly_and_run(
    net: vg.VGGish, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """vggish-10086976.pth (+ the numpy PCA file) and their safetensors conversions give the
    seeded network's outputs exactly."""
    x = signals(vg.WINDOW_SAMPLES)
    with torch.inference_mode():
        expected = net(x)
        loaded = vg.load_vggish(checkpoints["weights"])
        assert loaded.pproc is None and not loaded.training
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)

        with_pca = vg.load_vggish(checkpoints["weights"], checkpoints["pca"])
        params = seeded_pca()
        patches = net.patches(x).reshape(-1, 96, 64)
        ref = ref_postprocess(net.embed_patches(patches).double().numpy(), **params)
        got = with_pca(x).numpy()
        assert np.abs(got - ref).max() <= 1.0

        converted = vg.convert(checkpoints["weights"], tmp_path / "vggish.safetensors")
        pca_converted = vg.convert(checkpoints["pca"], tmp_path / "pca.safetensors")
        again = vg.load_vggish(converted, pca_converted)
        torch.testing.assert_close(again(x), with_pca(x), rtol=0, atol=0)
    assert converted.stat().st_size < checkpoints["weights"].stat().st_size * 1.01


@pytest.mark.slow
def test_whole_port_state_dict_brings_its_pca(net: vg.VGGish, tmp_path: Path) -> None:
    """A torchvggish model saved whole (``pproc.*`` beside the network) loads with its PCA."""
    params = seeded_pca()
    state = dict(net.net.state_dict())
    state["pproc.pca_eigen_vectors"] = torch.from_numpy(params["pca_eigen_vectors"]).float()
    state["pproc.pca_means"] = torch.from_numpy(params["pca_means"]).float().reshape(-1, 1)
    path = tmp_path / "whole.pth"
    torch.save(state, path)
    loaded = vg.load_vggish(path)
    assert loaded.pproc is not None
    torch.testing.assert_close(
        loaded.pproc.pca_means, torch.from_numpy(params["pca_means"]).float()
    )


def test_pca_file_of_numpy_arrays_loads(tmp_path: Path) -> None:
    """The release's PCA file holds numpy arrays; both serialisation formats are read."""
    params = seeded_pca()
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(numpy1_pickle(params))
    modern = tmp_path / "modern.pth"
    torch.save(params, modern)
    for path in (legacy, modern):
        raw = read_weights_file(path, "VGGish PCA", "x")
        assert isinstance(raw["pca_eigen_vectors"], np.ndarray)
        out = vg.convert(path, tmp_path / f"{path.stem}.safetensors")
        from safetensors.torch import load_file

        state = load_file(str(out))
        assert state["pca_means"].shape == (vg.DIM,) and state["pca_means"].dtype == torch.float32


def _touch(path: str) -> None:  # would run if a pickle were ever trusted
    Path(path).touch()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_touch, (str(self.marker),))


@pytest.mark.parametrize("wrap", ["plain", "numpy-object-array"])
def test_pickled_object_is_refused_not_run(tmp_path: Path, wrap: str) -> None:
    marker = tmp_path / "ran"
    payload: object = _Payload(marker)
    if wrap == "numpy-object-array":
        payload = np.array([payload, None], dtype=object)
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": payload}, path)
    refused = r"refused: .*weights_only=True.*it needs the (global|type) "
    with pytest.raises(ModelError, match=refused) as info:
        vg.load_vggish(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_damaged_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "vggish.pth"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelError, match="cannot read VGGish weights: not a PyTorch checkpoint"):
        vg.load_vggish(path)


def test_pickle_named_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vggish.safetensors"
    path.write_bytes(pickle.dumps({"features.0.weight": [1.0]}))
    with pytest.raises(ModelError, match="safetensors"):
        vg.load_vggish(path)


def test_wrong_keys_and_shapes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelError, match=r"VGGish weights: 18 missing keys \(e\.g\. features\.0\."):
        vg.load_vggish(path)
    pca = tmp_path / "pca.pth"
    torch.save({"pca_eigen_vectors": np.zeros((64, 64)), "pca_means": np.zeros(64)}, pca)
    with pytest.raises(ModelError, match=r"PCA weights: 2 size mismatches \(e\.g\. pca_eigen"):
        vg.convert(pca, tmp_path / "pca.safetensors")
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ModelError, match="expected a dict"):
        vg.load_vggish(listed)


def test_missing_files_say_where_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        vg.load_vggish(tmp_path / "vggish-10086976.pth")
    message = str(info.value)
    assert "\n" not in message
    for part in ("not found", vg.WEIGHTS_URL, "--backbone-weights PATH", "backbone_weights:"):
        assert part in message
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")  # the PCA file is looked at before the weights are read
    with pytest.raises(ModelError, match=f"VGGish PCA weights not found: .*{vg.PCA_URL}"):
        vg.load_vggish(weights, tmp_path / "nope.pth")


def test_convert_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / vg.PCA_FILE
    torch.save(seeded_pca(), src)
    assert vg.main(["convert", str(src)]) == 0
    assert (tmp_path / "vggish_pca_params-970ea276.safetensors").is_file()
    assert vg.main(["convert", str(tmp_path / "absent.pth")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: VGGish weights not found") and "\n" not in err


# ----------------------------------------------------------------------------- registry
def test_registered_and_read_from_the_users_file(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One registry entry is all it takes: the user's file (here by its environment variable)
    is read, the tower declares 16 kHz input, and a missing file names where to get it."""
    from avsearch.encoders.registry import BACKBONES, load_backbone, weights_env
    from avsearch.errors import ModelError

    info = BACKBONES["vggish"]
    assert (info.modality, info.dim, info.input.sample_rate) == ("audio", 128, 16_000)
    monkeypatch.setenv(weights_env("vggish"), str(checkpoints["weights"].parent / "absent.pth"))
    with pytest.raises(ModelError) as err:
        load_backbone("vggish")
    assert "torchvggish" in (err.value.hint or "")
    monkeypatch.setenv(weights_env("vggish"), str(checkpoints["weights"]))
    tower = load_backbone("vggish")
    out = tower.features(signals(vg.WINDOW_SAMPLES).numpy())
    assert out.shape == (3, 128) and np.isfinite(out).all()
