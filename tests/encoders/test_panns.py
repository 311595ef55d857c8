"""Tests for the PANNs CNN14 audio tower: its front-end against a numpy reference written from
the published code (librosa's Slaney mel filterbank and ``power_to_db``, torchlibrosa's STFT
conventions) on real audio, the tower's contract on seeded weights, and loading the public
checkpoint's layout from a local file only."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import get_window, resample_poly
from torch import nn

from avsearch.encoders import panns as pn
from avsearch.encoders.files import read_weights_file
from avsearch.encoders.tower import AudioInput, Tower
from avsearch.errors import ModelError
from tests.conftest import shared_path

SPOKEN = ("data", "fsdd", "0_george_0.wav")
DOG = ("data", "natural", "dog", "gcompris-memory-sound-LRBark_3_LA_cut.ogg")


# ----------------------------------------------------------------------------- reference
# Written from librosa (filters.mel with htk=False and norm="slaney", core.power_to_db) and
# torchlibrosa (stft.STFT: a DFT-matrix convolution, centre reflect padding), in float64.
def ref_hz_to_mel(freqs: np.ndarray | float) -> np.ndarray:
    """Slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    f = np.atleast_1d(np.asarray(freqs, dtype=np.float64))
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mels = f / f_sp
    above = f >= min_log_hz
    mels[above] = min_log_hz / f_sp + np.log(f[above] / min_log_hz) / logstep
    return mels


def ref_mel_to_hz(mels: np.ndarray) -> np.ndarray:
    m = np.asarray(mels, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    freqs = f_sp * m
    above = m >= min_log_mel
    freqs[above] = min_log_hz * np.exp(logstep * (m[above] - min_log_mel))
    return freqs


def ref_mel_filterbank(
    sr: int = 32000, n_fft: int = 1024, n_mels: int = 64, fmin: float = 50.0, fmax: float = 14000.0
) -> np.ndarray:
    """``librosa.filters.mel`` defaults (Slaney scale, unit-area triangles), ``[n_mels, bins]``
    float32 as librosa returns it."""
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = ref_mel_to_hz(np.linspace(ref_hz_to_mel(fmin)[0], ref_hz_to_mel(fmax)[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def ref_power_spectrogram(x: np.ndarray, n_fft: int = 1024, hop: int = 320) -> np.ndarray:
    """torchlibrosa ``Spectrogram`` (centre, reflect, periodic Hann): ``[frames, bins]``."""
    padded = np.pad(x, n_fft // 2, mode="reflect")
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] for i in range(count)])
    window = get_window("hann", n_fft, fftbins=True)
    return np.abs(np.fft.rfft(frames * window, axis=1)) ** 2


def ref_power_to_db(s: np.ndarray, ref: float = 1.0, amin: float = 1e-10) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(amin, s)) - 10.0 * np.log10(np.maximum(amin, ref))


def ref_log_mel(x: np.ndarray) -> np.ndarray:
    return ref_power_to_db(ref_power_spectrogram(x) @ ref_mel_filterbank().astype(np.float64).T)


def read_32k(parts: tuple[str, ...]) -> np.ndarray:
    import soundfile as sf

    data, rate = sf.read(shared_path(*parts), dtype="float64", always_2d=True)
    mono = data.mean(axis=1)
    g = np.gcd(rate, 32000)
    return resample_poly(mono, 32000 // g, rate // g)


# ----------------------------------------------------------------------------- seeded weights
def seeded_cnn14(seed: int = 0) -> pn.Cnn14:
    """Cnn14 with seeded He-scaled convolutions and BatchNorm statistics that keep activations
    O(1) (``bn0`` centred on typical log-mel levels)."""
    torch.manual_seed(seed)
    net = pn.Cnn14()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.weight.normal_(0.0, (2.0 / module.weight[0].numel()) ** 0.5)
                if module.bias is not None:
                    module.bias.uniform_(-0.05, 0.05)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(600_000)
        net.bn0.running_mean.uniform_(-60.0, -20.0)
        net.bn0.running_var.uniform_(100.0, 400.0)
    return net.eval()


def signals(n: int, rows: int = 2, seed: int = 0) -> torch.Tensor:
    """Noise and a gated tone (and near-silence), ``[rows, n]`` float32 at 32 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / pn.SAMPLE_RATE
    out = [
        0.1 * rng.standard_normal(n),
        0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 3 * t) > 0),
        1e-4 * rng.standard_normal(n),
    ]
    return torch.from_numpy(np.stack(out[:rows]).astype(np.float32))


@pytest.fixture(scope="module")
def net() -> pn.Cnn14:
    return seeded_cnn14()


def training_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, object]:
    """The dict ``pytorch/main.py`` saves: iteration, model state dict, sampler state (numpy
    arrays and numpy integers)."""
    rng = np.random.default_rng(0)
    return {
        "iteration": 600_000,
        "model": state,
        "sampler": {
            "indexes_per_class": [rng.permutation(50) for _ in range(3)],
            "queue": [np.int64(i) for i in (2, 0, 1)],
            "pointers_of_classes": [0, 5, 9],
        },
    }


# ----------------------------------------------------------------------------- front-end
def test_mel_filterbank_matches_reference() -> None:
    np.testing.assert_allclose(pn.slaney_mel_matrix(), ref_mel_filterbank().T, rtol=0, atol=1e-8)


def test_stft_kernels_match_torchlibrosa_construction() -> None:
    """torchlibrosa builds its kernels from a DFT matrix ``omega ** (n k)`` times the window."""
    n = np.arange(pn.N_FFT)
    dft = np.power(np.exp(-2j * np.pi / pn.N_FFT), np.outer(n, n))
    window = get_window("hann", pn.N_FFT, fftbins=True)
    kernels = (dft[:, : pn.N_FFT // 2 + 1] * window[:, None]).T[:, None, :]
    real, imag = pn.stft_kernels()
    assert real.shape == imag.shape == (513, 1, 1024) and real.dtype == np.float32
    np.testing.assert_allclose(real, kernels.real, rtol=0, atol=1e-6)
    np.testing.assert_allclose(imag, kernels.imag, rtol=0, atol=1e-6)


def test_reference_agrees_with_librosa() -> None:
    """The numpy reference itself against librosa, where librosa happens to be installed."""
    librosa = pytest.importorskip("librosa")
    mel = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50.0, fmax=14000.0)
    np.testing.assert_allclose(ref_mel_filterbank(), mel, rtol=0, atol=1e-8)
    x = np.random.default_rng(0).standard_normal(20_000) * 0.1
    spec = np.abs(librosa.stft(x, n_fft=1024, hop_length=320, center=True, pad_mode="reflect"))
    np.testing.assert_allclose(ref_power_spectrogram(x), spec.T**2, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("parts", [SPOKEN, DOG], ids=["fsdd-digit", "dog-bark"])
def test_log_mel_matches_reference_on_real_audio(net: pn.Cnn14, parts: tuple[str, ...]) -> None:
    """Real audio resampled to 32 kHz (zero-padded to the 2 s window, as the tower pads)."""
    audio = read_32k(parts)
    audio = np.pad(audio, (0, max(0, pn.WINDOW_SAMPLES - len(audio))))
    with torch.inference_mode():
        got = net.log_mel(torch.from_numpy(audio.astype(np.float32))[None])[0].numpy()
    ref = ref_log_mel(audio)
    assert got.shape == ref.shape == (1 + len(audio) // pn.HOP, pn.N_MELS)
    assert ref.max() > -40.0  # there is sound in it
    assert_log_mel_close(got, ref)


def assert_log_mel_close(got: np.ndarray, ref: np.ndarray) -> None:
    """Within 5e-4 dB where the band is within 60 dB of the loudest; 0.01 dB below that, where
    float32 (as PANNs computes) loses digits to the louder bins of the same frame."""
    loud = ref > ref.max() - 60.0
    assert loud.sum() >= 500  # enough of the comparison is on sound
    np.testing.assert_allclose(got[loud], ref[loud], rtol=0, atol=5e-4)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-2)


def test_short_signal_front_end_without_padding(net: pn.Cnn14) -> None:
    """The extractors alone on the 0.3 s digit: same frames as the reference."""
    audio = read_32k(SPOKEN)
    x = torch.from_numpy(audio.astype(np.float32))[None]
    with torch.inference_mode():
        got = net.logmel_extractor(net.spectrogram_extractor(x))[0].numpy()
    assert_log_mel_close(got, ref_log_mel(audio))


def test_tone_lands_in_its_mel_band(net: pn.Cnn14) -> None:
    t = np.arange(pn.WINDOW_SAMPLES) / pn.SAMPLE_RATE
    tone = torch.from_numpy((0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32))
    with torch.inference_mode():
        spec = net.log_mel(tone[None])[0]
    edges = ref_mel_to_hz(np.linspace(ref_hz_to_mel(50.0)[0], ref_hz_to_mel(14000.0)[0], 66))
    assert int(spec.mean(0).argmax()) == int(np.abs(edges[1:-1] - 1000.0).argmin())


# ----------------------------------------------------------------------------- tower contract
def test_contract_attributes(net: pn.Cnn14) -> None:
    assert (pn.Cnn14.SAMPLE_RATE, pn.Cnn14.WINDOW_SAMPLES, pn.Cnn14.DIM) == (32000, 64000, 2048)
    assert isinstance(net, Tower)
    assert net.input == AudioInput(32000, 64000) and (net.modality, net.dim) == ("audio", 2048)


def test_state_dict_has_the_public_names(net: pn.Cnn14) -> None:
    keys = list(net.state_dict())
    assert keys[:3] == list(pn.FRONTEND_KEYS)
    assert "bn0.running_var" in keys and "conv_block6.bn2.num_batches_tracked" in keys
    assert keys[-4:] == ["fc1.weight", "fc1.bias", "fc_audioset.weight", "fc_audioset.bias"]
    assert len(keys) == 3 + 5 + 6 * 12 + 4


def test_forward_shape_finite_deterministic(net: pn.Cnn14) -> None:
    x = signals(pn.WINDOW_SAMPLES, rows=3)
    with torch.inference_mode():
        a, b = net(x), net(x)
        tags = net.clipwise(x[:1])
    assert a.shape == (3, pn.DIM) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and torch.equal(a, b)
    assert (a >= 0).all() and (a > 0).any(dim=1).all()  # ReLU'd, not dead
    assert torch.cdist(a, a).triu(1)[0, 1:].min() > 1e-3
    assert tags.shape == (1, pn.N_CLASSES) and ((tags >= 0) & (tags <= 1)).all()
    got = net.features(x.numpy()[:2, : pn.WINDOW_SAMPLES - 1000])  # the numpy entry point
    assert got.dtype == np.float32 and got.shape == (2, pn.DIM) and np.isfinite(got).all()


def test_batch_independence(net: pn.Cnn14) -> None:
    x = signals(pn.WINDOW_SAMPLES)
    with torch.inference_mode():
        batch = net(x)
        alone = torch.cat([net(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-4)


def test_short_rows_are_zero_padded_and_long_rows_embedded_whole(net: pn.Cnn14) -> None:
    x = signals(pn.WINDOW_SAMPLES + 16_000, rows=1)
    with torch.inference_mode():
        short = net.log_mel(x[:, :12_000])
        zeros = torch.zeros(1, pn.WINDOW_SAMPLES - 12_000)
        padded = net.log_mel(torch.cat([x[:, :12_000], zeros], dim=1))
        long = net(x)
        window = net(x[:, : pn.WINDOW_SAMPLES])
    assert short.shape == (1, 1 + pn.WINDOW_SAMPLES // pn.HOP, pn.N_MELS)
    torch.testing.assert_close(short, padded, rtol=0, atol=0)
    assert long.shape == (1, pn.DIM) and torch.isfinite(long).all()
    assert not torch.allclose(long, window)  # the extra half second is seen
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        net(torch.zeros(pn.WINDOW_SAMPLES))


# ----------------------------------------------------------------------------- loading
@pytest.mark.slow
def test_public_layout_loads_strictly_and_runs(net: pn.Cnn14, tmp_path: Path) -> None:
    """``Cnn14_mAP=0.431.pth``'s layout (a training checkpoint dict whose ``model`` is the state
    dict) and its safetensors conversion give the seeded network's outputs exactly."""
    src = tmp_path / pn.WEIGHTS_FILE
    torch.save(training_checkpoint(net.state_dict()), src)
    x = signals(pn.WINDOW_SAMPLES)
    with torch.inference_mode():
        expected = net(x)
        loaded = pn.load_cnn14(src)
        assert not loaded.training
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
        converted = pn.convert(src)
        assert converted == tmp_path / "Cnn14_mAP=0.431.safetensors"
        torch.testing.assert_close(pn.load_cnn14(converted)(x), expected, rtol=0, atol=0)


def test_training_checkpoint_extras_are_read_safely(tmp_path: Path) -> None:
    """Iteration and a sampler state of numpy arrays and integers pass weights_only loading."""
    path = tmp_path / "small.pth"
    torch.save(training_checkpoint({"fc1.bias": torch.zeros(pn.DIM)}), path)
    raw = read_weights_file(path, "PANNs CNN14", pn.SOURCE)
    assert raw["iteration"] == 600_000 and isinstance(raw["model"], dict)
    with pytest.raises(ModelError, match=r"not PANNs CNN14 \(32 kHz\) weights: 83 missing keys"):
        pn.load_cnn14(path)


def test_16k_checkpoint_is_refused_and_foreign_front_end_warned(
    net: pn.Cnn14, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``Cnn14_16k_mAP=0.438.pth`` has 257-bin kernels: a size mismatch, not a silent load. A
    front-end of the right shapes but other values is named in a warning."""
    path = tmp_path / "Cnn14_16k.pth"
    state = {
        "spectrogram_extractor.stft.conv_real.weight": torch.zeros(257, 1, 512),
        "spectrogram_extractor.stft.conv_imag.weight": torch.zeros(257, 1, 512),
        "logmel_extractor.melW": torch.zeros(257, 64),
    }
    torch.save({"iteration": 1, "model": state}, path)
    with pytest.raises(ModelError, match=r"weights: 3 size mismatches \(e\.g\. spectro") as info:
        pn.load_cnn14(path)
    assert "\n" not in str(info.value)

    built = net.state_dict()  # seeded network, front-end as built
    other = tmp_path / "other.pth"
    torch.save({"model": {k: built[k] * 1.01 for k in pn.FRONTEND_KEYS}}, other)
    with caplog.at_level(logging.WARNING, logger=pn.__name__), pytest.raises(ModelError):
        pn.load_cnn14(other)
    assert "logmel_extractor.melW differs" in caplog.text


def _touch(path: str) -> None:  # would run if a pickle were ever trusted
    Path(path).touch()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_touch, (str(self.marker),))


def test_pickled_object_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"iteration": 1, "model": {"fc1.bias": _Payload(marker)}}, path)
    refused = r"refused: .*it needs the global .*test_panns\._touch"
    with pytest.raises(ModelError, match=refused) as info:
        pn.load_cnn14(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_non_tensor_entries_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "strings.pth"
    torch.save({"model": {"fc1.bias": "not a tensor"}}, path)
    with pytest.raises(ModelError, match=r"'fc1\.bias' is a str"):
        pn.load_cnn14(path)


def test_missing_file_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        pn.load_cnn14(tmp_path / "Cnn14_mAP=0.431.pth")
    message = str(info.value)
    assert "\n" not in message
    for part in (
        "PANNs CNN14 weights not found",
        "Cnn14_mAP=0.431.pth",
        "Zenodo record 3987831",
        "https://zenodo.org/record/3987831",
        "--backbone-weights PATH",
        "backbone_weights:",
    ):
        assert part in message


def test_convert_command_reports_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pn.main(["convert", str(tmp_path / pn.WEIGHTS_FILE)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: PANNs CNN14 weights not found") and "zenodo" in err
