"""Why new speakers are hard: leave-one-speaker-out linear probes of digit identity.

For each of the 5 FSDD speakers, a logistic regression is fitted on the other 4 speakers'
train takes (5-49) and scored on all 500 clips of the held-out one (chance 0.10). The probes
read:

- the frozen aisfx embedding (512-d: block 4, mean over mel, max over time), which is what
  the heads of ``avsearch train`` see;
- a time-normalised MFCC template computed from the same log-mel input (voiced frames cut
  out, cepstra 1-20 of mel bands below 4 kHz, resampled to 12 frames): a classic
  isolated-word representation that keeps the order of sounds, which aisfx's global max over
  time throws away;
- the EfficientWord-Net spoken-word embedding of the ``aisfx-words`` backbone (2048-d; a
  ResNet-50 trained on many voices to say which word was spoken), alone and beside aisfx.

The backbones run once (features cached under bench/out/cache); the probes take a minute.
Writes the "speaker_probe" section of docs/benchmarks.md.

    python bench/speaker_probe.py
    python bench/speaker_probe.py --quick     # takes 0-9 only, prints, writes nothing
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import avdigits_data as avdigits
import numpy as np
import torch
from _common import cached, machine_line, shared_data, write_section
from scipy.fft import dct
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from avsearch.encoders.audio_frontend import SAMPLE_RATE, WINDOW_SAMPLES, LogMelFrontend
from avsearch.encoders.cepstra import CepstralTemplate
from avsearch.encoders.registry import load_backbone
from avsearch.media.decode import WindowSpec, audio_pieces

MEL_BELOW_4K = 56  # HTK mel bands 0-55 of aisfx's 96 (0-22.05 kHz) lie below FSDD's 4 kHz


def mfcc_template(logmel: np.ndarray, frames: int = 12, n_cep: int = 20) -> np.ndarray:
    """[T, mel] log-mel -> cepstra 1..n_cep of the voiced frames, resampled to ``frames``."""
    x = logmel[:, :MEL_BELOW_4K]
    energy = x.sum(axis=1)
    voiced = np.flatnonzero(energy > 0.3 * energy.max()) if energy.max() > 0 else [0]
    seg = x[voiced[0] : voiced[-1] + 1]
    cep = dct(seg, axis=1, norm="ortho")[:, 1 : n_cep + 1]
    pos = np.linspace(0, len(cep) - 1, frames)
    out = np.stack([np.interp(pos, np.arange(len(cep)), cep[:, k]) for k in range(n_cep)], 1)
    return out.ravel()


def probe(x: np.ndarray, y: np.ndarray, speaker: np.ndarray, take: np.ndarray) -> list[float]:
    accs = []
    for s in avdigits.SPEAKERS:
        tr, te = (speaker != s) & (take >= 5), speaker == s
        scaler = StandardScaler().fit(x[tr])
        clf = LogisticRegression(C=0.1, max_iter=3000).fit(scaler.transform(x[tr]), y[tr])
        accs.append(float(clf.score(scaler.transform(x[te]), y[te])))
    return accs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--quick", action="store_true", help="takes 0-9 only; print, write nothing")
    args = ap.parse_args()
    data = shared_data()
    t0 = time.perf_counter()
    items = avdigits.fsdd_items(data / "fsdd", "all")
    if args.quick:
        items = [i for i in items if i.take <= 9]
    y = np.array([i.digit for i in items])
    speaker = np.array([i.speaker for i in items])
    take = np.array([i.take for i in items])
    spec = WindowSpec(WINDOW_SAMPLES, SAMPLE_RATE)
    raw = np.stack([next(iter(audio_pieces(i.path, spec))).data for i in items])
    with torch.inference_mode():
        logmel = torch.cat(
            [LogMelFrontend()(torch.from_numpy(raw[i : i + 256])) for i in range(0, len(raw), 256)]
        ).numpy()
    aisfx = load_backbone("aisfx")

    def aisfx_features() -> np.ndarray:
        with torch.inference_mode():
            return torch.cat(
                [aisfx(torch.from_numpy(raw[i : i + 64])) for i in range(0, len(raw), 64)]
            ).numpy()

    feat = cached("fsdd-aisfx", f"{len(items)}|{WINDOW_SAMPLES}", aisfx_features)
    with torch.inference_mode():
        template = CepstralTemplate()(torch.from_numpy(logmel)).numpy()
    from avsearch.encoders.words import WordModel

    model = WordModel()
    words = cached("fsdd-all-words", f"{len(items)}", lambda: model.embed_windows(raw, SAMPLE_RATE))
    t_feat = time.perf_counter() - t0
    probes: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("aisfx embedding (512-d, what the heads see)", lambda: feat),
        (
            "time-normalised MFCC template (12 × 20)",
            lambda: np.stack([mfcc_template(m) for m in logmel]),
        ),
        (
            "aisfx-cepstra's template (16 × 13, `avsearch/encoders/cepstra.py`)",
            lambda: template,
        ),
        (
            "aisfx-cepstra: aisfx embedding + template (720-d)",
            lambda: np.concatenate([feat, template], 1),
        ),
        ("spoken-word embedding (EfficientWord-Net, 2048-d)", lambda: words),
        (
            "aisfx-words: aisfx embedding + word embedding (2560-d)",
            lambda: np.concatenate([feat, words], 1),
        ),
    ]
    rows = []
    for name, make in probes:
        accs = probe(make(), y, speaker, take)
        rows.append(
            f"| {name} | {np.mean(accs):.3f} | " + " | ".join(f"{a:.2f}" for a in accs) + " |"
        )
        print(rows[-1], flush=True)
    total = time.perf_counter() - t0
    table = "\n".join(
        [
            "| representation | mean accuracy | " + " | ".join(avdigits.SPEAKERS) + " |",
            "|---|---|" + "---|" * len(avdigits.SPEAKERS),
            *rows,
        ]
    )
    print(f"inputs {t_feat:.0f} s, total {total:.0f} s")
    if args.no_write or args.quick:
        return
    write_section(
        "speaker_probe",
        f"""## Why new speakers are hard (`python bench/speaker_probe.py`)

{machine_line()}. Digit accuracy of a logistic regression (C = 0.1, standardised inputs)
fitted on 4 speakers' train takes and scored on all 500 clips of the 5th (chance 0.10);
one column per held-out speaker. Whole run {total:.0f} s.

{table}

A 1990s-style template that keeps the order of the sounds carries the digit across
speakers far better than the aisfx embedding: aisfx (trained on sound effects) answers
"what kind of sound", and its global max over time drops "in which order", which is what
tells digits apart across voices. The `aisfx-cepstra` audio backbone (`train
--audio-backbone aisfx-cepstra`) adds the template to the embedding instead. A network
trained for exactly this, on words said by thousands of voices, does far better still: the
EfficientWord-Net word embedding of the `aisfx-words` backbone (`train --audio-backbone
aisfx-words`), which is what the leave-one-speaker-out figures of the "default_loso"
section rest on.
""",
    )


if __name__ == "__main__":
    main()
