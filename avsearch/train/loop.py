"""The training loop: PSD, triplet, supervised and InfoNCE (docs/method.md).

``train(data, label_mask, cfg, out_dir)`` fits the two projection heads and the shared
classifier on precomputed backbone features (``FeatureSet``) or on augmented views
(``TrainData``, :mod:`avsearch.train.views`: one view per item drawn each epoch). It writes
into ``out_dir``:

- a model directory (``config.yaml`` + ``heads.safetensors`` with ``audio.*``, ``visual.*``
  and ``classifier.*``) holding the best epoch by validation MAP, built from the caller's
  ``ModelConfig`` template (its backbones are kept; heads, dim and recipe are filled in);
- ``train_log.jsonl``: one JSON object per epoch (loss parts, triplet counts, schedule values,
  learning rate, validation MAP);
- ``checkpoint/``: the state after the last finished epoch (``avsearch.train.checkpoint``).

Batches: ``cfg.sampler`` ``random`` draws pairs in proportion
(:func:`avsearch.train.data.epoch_batches`), ``balanced`` ``cfg.per_class`` labeled pairs of each
of several labels per batch (:func:`avsearch.train.sampler.balanced_batches`).

Determinism: every random choice of epoch e (batch order, partners, views, dropout) comes
from generators seeded with (seed, e) — ``numpy.random.default_rng([seed, e])`` and
``torch.manual_seed`` inside ``torch.random.fork_rng``, so the caller's global RNG is left as
it was — and training runs on ``TRAIN_THREADS`` (1) torch thread with deterministic
algorithms (:func:`deterministic_torch`; both restored afterwards): float sums over 2 threads
come out in a different order from run to run. Same seed and data ⇒ byte-identical weights
on the same machine; ``resume=True`` after an interruption restores nets, teacher, optimizer
and early-stopping state and gives bit-for-bit the model of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avsearch.encoders.heads import HeadConfig, ProjectionHead
from avsearch.encoders.model_dir import ModelConfig, save_model_dir
from avsearch.errors import UsageError
from avsearch.evaluate import RetrievalReport, evaluate_cross_modal
from avsearch.train import checkpoint as ckpt
from avsearch.train.config import TrainConfig
from avsearch.train.data import (
    FeatureSet,
    epoch_batches,
    split_pair_validation,
    split_validation,
)
from avsearch.train.export import build_model_config, check_template
from avsearch.train.nets import AVNets
from avsearch.train.objective import PARTS, Objective
from avsearch.train.sampler import balanced_batches
from avsearch.train.schedule import (
    StepSchedule,
    constant,
    cosine_lr,
    labeled_share,
    one_cycle,
    soft_weight,
)
from avsearch.train.teacher import make_teacher
from avsearch.train.views import TrainData, Views

log = logging.getLogger(__name__)

LOG_NAME = "train_log.jsonl"
CHECKPOINT_DIR = "checkpoint"
# torch threads while training: the heads are small, and on one thread every float sum has
# one order, so a run is reproducible byte for byte (on 2, re-runs differed in the 3rd digit)
TRAIN_THREADS = 1


@contextmanager
def deterministic_torch(threads: int = TRAIN_THREADS) -> Iterator[None]:
    """Run the block on ``threads`` torch threads with deterministic algorithms only; the
    caller's settings are restored afterwards."""
    before = torch.get_num_threads()
    was_det = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_det, warn_only=was_warn)
        torch.set_num_threads(before)


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch did; ``losses`` are per-step means of the unweighted parts + ``total``."""

    epoch: int
    losses: dict[str, float]
    triplets: dict[str, float]
    labeled_share: float
    soft_weight: float
    lr: float
    val: dict[str, float] | None
    best_epoch: int
    best_val_map: float | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> EpochRecord:
        return cls(**raw)


ProgressCallback = Callable[[EpochRecord], None]


@dataclass
class TrainResult:
    out_dir: Path
    fingerprint: str
    config: TrainConfig
    model_config: ModelConfig
    nets: AVNets
    classes: list[int]
    history: list[EpochRecord]
    best_epoch: int
    best_val_map: float | None
    stopped_early: bool

    @property
    def audio_head(self) -> ProjectionHead:
        return self.nets.audio

    @property
    def visual_head(self) -> ProjectionHead:
        return self.nets.visual


def train(
    features: FeatureSet | TrainData,
    label_mask: np.ndarray,
    cfg: TrainConfig,
    out_dir: Path | str,
    *,
    val: FeatureSet | TrainData | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    model_template: ModelConfig | None = None,
    training_info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train on paired data where ``label_mask[i]`` says whether pair i's label is known
    (a pair whose label is unknown may carry any label value, e.g. -1; it is never read).

    Without ``val``, a seeded share ``cfg.val_fraction`` of the labeled items is held out for
    validation (none if 0: the last epoch is kept); when no class can spare items and the
    method reads unlabeled pairs, a share of those pairs instead, each its own class
    (:func:`~avsearch.train.data.split_pair_validation`). ``model_template`` gives the backbones of
    the saved model directory (default: placeholder names ``audio-features`` /
    ``visual-features``, a directory usable for feature evaluation only). ``training_info``
    is merged into the ``training`` section of its config.yaml.
    """
    data = TrainData.of(features)
    mask = _check_mask(label_mask, len(data), cfg)
    val_data = None if val is None else TrainData.of(val)
    if val_data is None and cfg.val_fraction > 0:
        tr_idx, va_idx = split_validation(data.labels, mask, cfg.val_fraction, cfg.seed)
        pairs = not len(va_idx) and cfg.uses_unlabeled
        if pairs:  # no label can validate: held-out pairs, each its own class
            tr_idx, va_idx = split_pair_validation(mask, cfg.val_fraction, cfg.seed)
        if len(va_idx):
            val_data, data, mask = data.subset(va_idx), data.subset(tr_idx), mask[tr_idx]
            if pairs:
                val_data = replace(val_data, labels=np.arange(len(va_idx)))
    if val_data is not None and (
        val_data.audio.item_shape != data.audio.item_shape
        or val_data.visual.item_shape != data.visual.item_shape
    ):
        raise UsageError("validation features have other dimensions than the training features")
    dims = {}
    for m, views in (("audio", data.audio), ("visual", data.visual)):
        if len(views.item_shape) != 1:
            raise UsageError(f"{m} inputs must be feature vectors, got shape {views.item_shape}")
        dims[m] = views.item_shape[0]
    template = check_template(model_template, dims, cfg)
    with torch.random.fork_rng(devices=[]), deterministic_torch():
        run = _Run(data, mask, val_data, cfg, Path(out_dir), template, training_info or {})
        return run.run(resume, progress)


def embed(head: ProjectionHead, features: np.ndarray, batch: int = 4096) -> np.ndarray:
    """L2-normalised embeddings of [N, in_dim] features, with the head in eval mode."""
    was_training = head.training
    head.eval()
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    with torch.no_grad():
        out = torch.cat([head(x[i : i + batch]) for i in range(0, len(x), batch)])
    head.train(was_training)
    return out.numpy()


def evaluate_heads(
    audio_head: ProjectionHead,
    visual_head: ProjectionHead,
    audio: np.ndarray,
    audio_labels: np.ndarray,
    visual: np.ndarray,
    visual_labels: np.ndarray,
) -> RetrievalReport:
    """Cross-modal MAP of the heads on (possibly unpaired) audio and visual feature sets."""
    return evaluate_cross_modal(
        embed(audio_head, audio), audio_labels, embed(visual_head, visual), visual_labels
    )


# ------------------------------------------------------------------------------ checks
def _check_mask(label_mask: np.ndarray, n: int, cfg: TrainConfig) -> np.ndarray:
    mask = np.asarray(label_mask)
    if mask.dtype != bool or mask.shape != (n,):
        raise UsageError(
            f"label_mask must be a bool array with one entry per pair ({n}), "
            f"got {mask.dtype} {mask.shape}"
        )
    if not mask.any() and not cfg.use_nce:
        raise UsageError(
            f"no pair is labeled: --method {cfg.method} needs labels for some pairs",
            hint="give labels (--labels CSV or class folders), or train on the pairs alone "
            "with --method infonce",
        )
    return mask


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------ the run
class _Run:
    def __init__(
        self,
        features: TrainData,
        mask: np.ndarray,
        val: TrainData | None,
        cfg: TrainConfig,
        out_dir: Path,
        template: ModelConfig,
        training_info: dict[str, Any],
    ) -> None:
        self.cfg, self.out_dir, self.template, self.info = cfg, out_dir, template, training_info
        self.features, self.val = features, val
        self.views: dict[str, Views] = {"audio": features.audio, "visual": features.visual}
        self.drawn = {m: np.zeros(len(features), dtype=np.int64) for m in self.views}
        self.classes = np.unique(features.labels[mask])
        if len(self.classes) < 2 and not cfg.use_nce:
            raise UsageError("the labeled training items cover fewer than 2 classes")
        if cfg.sampler == "balanced" and len(self.classes) < 2:
            raise UsageError(
                f"--sampler balanced needs labeled pairs of 2 labels or more, got "
                f"{len(self.classes)}",
                hint="give labels (--labels CSV or class folders), or drop --sampler balanced",
            )
        codes = np.full(len(features), -1, dtype=np.int64)
        codes[mask] = np.searchsorted(self.classes, features.labels[mask])
        self.codes = torch.from_numpy(codes)
        self.labeled, self.unlabeled = np.flatnonzero(mask), np.flatnonzero(~mask)
        self.run_key = _digest(
            cfg.to_dict(),
            features.digest(),
            hashlib.sha256(mask.tobytes()).hexdigest(),
            val.digest() if val is not None else None,
        )

        torch.manual_seed(cfg.seed)
        head = {
            m: HeadConfig(v.item_shape[0], cfg.dim, cfg.hidden, cfg.dropout)
            for m, v in self.views.items()
        }
        self.nets = AVNets(head["audio"], head["visual"], len(self.classes), cfg.classifier_scale)
        for m, v in self.views.items():
            clean = torch.from_numpy(np.ascontiguousarray(v.clean()))
            self.nets.head(m).fit_normalisation(clean)
        self.teacher = make_teacher(cfg.teacher, self.nets, cfg.ema_decay)
        self.opt = torch.optim.AdamW(
            self.nets.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.objective = Objective(cfg, len(self.classes))
        self.steps_per_epoch = len(self._batches(np.random.default_rng(0)))
        self.step_at: StepSchedule | None = None
        if cfg.lr_schedule == "one-cycle":
            self.step_at = one_cycle(cfg.lr, cfg.epochs * self.steps_per_epoch)
        self.lr_at = (
            cosine_lr(cfg.lr, cfg.epochs) if cfg.lr_schedule == "cosine" else constant(cfg.lr)
        )
        w, r = cfg.warmup_epochs, cfg.ramp_epochs
        self.share_at = labeled_share(w, r, cfg.labeled_floor) if cfg.progressive else constant(1)
        self.soft_at = soft_weight(w, r) if cfg.use_cross_soft or cfg.use_distill else constant(0.0)

        self.ckpt_dir = out_dir / CHECKPOINT_DIR
        self.start = 0
        self.history: list[EpochRecord] = []
        self.best_state: dict[str, Tensor] | None = None
        self.best_epoch, self.best_map, self.bad_epochs = -1, None, 0
        self.stopped, self.finished = False, False
        self.partner = np.arange(len(features))

    # -------------------------------------------------------------------------- driver
    def run(self, resume: bool, progress: ProgressCallback | None) -> TrainResult:
        if resume and ckpt.has_checkpoint(self.ckpt_dir):
            self._restore()
            log.info("resuming %s after epoch %d", self.out_dir, self.start - 1)
        else:
            ckpt.clear_checkpoint(self.ckpt_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._rewrite_log()
        epoch = self.start
        while not self.finished and epoch < self.cfg.epochs:
            record = self._epoch(epoch)
            self.history.append(record)
            self.finished = self.stopped or epoch == self.cfg.epochs - 1
            self._save_checkpoint(epoch)
            with (self.out_dir / LOG_NAME).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record.to_json()) + "\n")
            log.info("epoch %d: %s", epoch, record.losses | (record.val or {}))
            if progress is not None:
                progress(record)
            epoch += 1
        return self._finish()

    def _set_lr(self, epoch: int, step: int) -> float:
        """Set (and return) the learning rate of step ``step`` of ``epoch``; a per-step
        schedule sets Adam's β₁ too."""
        if self.step_at is None:
            lr = self.lr_at(epoch)
            for group in self.opt.param_groups:
                group["lr"] = lr
            return lr
        lr, beta1 = self.step_at(epoch * self.steps_per_epoch + step)
        for group in self.opt.param_groups:
            group["lr"] = lr
            group["betas"] = (beta1, group["betas"][1])
        return lr

    def _epoch(self, epoch: int) -> EpochRecord:
        cfg, t0 = self.cfg, time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 1_000_003 + epoch + 1)
        share, w_soft = self.share_at(epoch), self.soft_at(epoch)
        lr = self._set_lr(epoch, 0)
        self.nets.train()
        sums: dict[str, float] = {}
        batches = self._batches(rng)
        self.partner = self._partners(rng)
        self.drawn = {m: v.draw(rng) for m, v in self.views.items()}
        for step, batch in enumerate(batches):
            self._set_lr(epoch, step)
            for key, value in self._step(batch, share, w_soft).items():
                sums[key] = sums.get(key, 0.0) + value
        self.teacher.end_epoch(self.nets)
        val = self._validate()
        self._track_best(epoch, val)
        n = len(batches)
        return EpochRecord(
            epoch=epoch,
            losses={k: sums[k] / n for k in ("total", *PARTS) if k in sums},
            triplets={k: sums[f"n_{k}"] / n for k in ("hard", "soft") if f"n_{k}" in sums},
            labeled_share=share,
            soft_weight=w_soft,
            lr=lr,
            val=val,
            best_epoch=self.best_epoch,
            best_val_map=self.best_map,
            seconds=round(time.perf_counter() - t0, 3),
        )

    def _batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        cfg = self.cfg
        if cfg.sampler == "balanced":
            return balanced_batches(
                rng,
                self.labeled,
                self.codes.numpy()[self.labeled],
                self.unlabeled,
                cfg.batch_size,
                cfg.per_class,
                use_unlabeled=cfg.uses_unlabeled,
                min_labeled_share=cfg.min_labeled_batch_share,
            )
        return epoch_batches(
            rng,
            self.labeled,
            self.unlabeled,
            cfg.batch_size,
            use_unlabeled=cfg.uses_unlabeled,
            min_labeled_share=cfg.min_labeled_batch_share,
        )

    def _partners(self, rng: np.random.Generator) -> np.ndarray:
        """Visual row of each pair this epoch: its own, or (``repair_labeled``) a labeled item
        of the same class drawn afresh, so labeled audio meets many images of its class."""
        partner = np.arange(len(self.features))
        if not self.cfg.repair_labeled:
            return partner
        codes = self.codes.numpy()
        for c in range(len(self.classes)):
            members = self.labeled[codes[self.labeled] == c]
            partner[members] = rng.choice(members, size=len(members), replace=True)
        return partner

    # -------------------------------------------------------------------------- one step
    def _step(self, batch: np.ndarray, share: float, w_soft: float) -> dict[str, float]:
        idx = torch.from_numpy(batch)
        v_rows = self.partner[batch]
        audio = self.views["audio"].take(batch, self.drawn["audio"][batch])
        visual = self.views["visual"].take(v_rows, self.drawn["visual"][v_rows])
        loss = self.objective(
            self.nets, self.teacher, audio, visual, self.codes[idx], share, w_soft
        )
        if loss.total.requires_grad:
            self.opt.zero_grad(set_to_none=True)
            loss.total.backward()
            self.opt.step()
            self.teacher.step(self.nets)
        out = {"total": float(loss.total.detach())}
        out.update({k: float(t.detach()) for k, t in loss.parts.items()})
        out.update({f"n_{k}": float(n) for k, n in loss.triplets.items()})
        return out

    # -------------------------------------------------------------------------- validation
    def _validate(self) -> dict[str, float] | None:
        if self.val is None:
            return None
        report = evaluate_cross_modal(
            embed(self.nets.audio, self.val.audio.clean()),
            self.val.labels,
            embed(self.nets.visual, self.val.visual.clean()),
            self.val.labels,
        )
        return {"map": report.map, "a2v_map": report.a2v_map, "v2a_map": report.v2a_map}

    def _keep_best(self, epoch: int, score: float | None) -> None:
        self.best_map, self.best_epoch, self.bad_epochs = score, epoch, 0
        self.best_state = {k: t.detach().clone() for k, t in self.nets.state_dict().items()}

    def _track_best(self, epoch: int, val: dict[str, float] | None) -> None:
        score = None if val is None else val["map"]
        if self.best_map is None or score is None or score > self.best_map:
            self._keep_best(epoch, score)
        else:
            self.bad_epochs += 1
        cfg = self.cfg
        schedule_done = epoch + 1 >= cfg.warmup_epochs + cfg.ramp_epochs or not (
            cfg.progressive or cfg.use_cross_soft or cfg.use_distill
        )
        if cfg.patience and val is not None and self.bad_epochs >= cfg.patience and schedule_done:
            self.stopped = True

    # -------------------------------------------------------------------------- persistence
    def _save_checkpoint(self, epoch: int) -> None:
        tensors = {
            **ckpt.prefixed("nets", self.nets.state_dict()),
            **ckpt.prefixed("teacher", self.teacher.state_dict()),
            **ckpt.prefixed("best", self.best_state or self.nets.state_dict()),
        }
        optim_tensors, groups = ckpt.optimizer_to_tensors(self.opt)
        tensors.update(optim_tensors)
        meta = {
            "run_key": self.run_key,
            "best_epoch": self.best_epoch,
            "best_val_map": self.best_map,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped,
            "finished": self.finished,
            "param_groups": groups,
            "history": [r.to_json() for r in self.history],
        }
        ckpt.save_checkpoint(self.ckpt_dir, epoch, tensors, meta)

    def _restore(self) -> None:
        tensors, meta = ckpt.load_checkpoint(self.ckpt_dir)
        if meta.get("run_key") != self.run_key:
            raise UsageError(
                f"the checkpoint in {self.ckpt_dir} belongs to another run "
                "(different options or data)",
                hint="run without --resume to start over, or choose another --out",
            )
        self.nets.load_state_dict(ckpt.unprefixed("nets", tensors), strict=True)
        self.teacher.load_state_dict(ckpt.unprefixed("teacher", tensors))
        self.best_state = ckpt.unprefixed("best", tensors)
        ckpt.optimizer_from_tensors(self.opt, tensors, meta["param_groups"])
        self.start = int(meta["epoch"]) + 1
        self.best_epoch, self.best_map = int(meta["best_epoch"]), meta["best_val_map"]
        self.bad_epochs = int(meta["bad_epochs"])
        self.stopped, self.finished = bool(meta["stopped_early"]), bool(meta["finished"])
        self.history = [EpochRecord.from_json(r) for r in meta["history"]]

    def _rewrite_log(self) -> None:
        lines = "".join(json.dumps(r.to_json()) + "\n" for r in self.history)
        tmp = self.out_dir / f".{LOG_NAME}.tmp"
        tmp.write_text(lines, encoding="utf-8")
        tmp.replace(self.out_dir / LOG_NAME)

    def _finish(self) -> TrainResult:
        if self.best_state is not None:
            self.nets.load_state_dict(self.best_state, strict=True)
        self.nets.eval()
        model_config = build_model_config(
            self.template,
            self.cfg,
            self.nets,
            self.info,
            classes=[int(c) for c in self.classes],
            counts={
                "n_train": len(self.codes),
                "n_labeled": len(self.labeled),
                "n_val": 0 if self.val is None else len(self.val),
            },
            results={
                "best_epoch": self.best_epoch,
                "best_val_map": self.best_map,
                "epochs_run": len(self.history),
                "stopped_early": self.stopped,
            },
        )
        fingerprint = save_model_dir(
            self.out_dir,
            model_config,
            {
                "audio": self.nets.audio,
                "visual": self.nets.visual,
                "classifier": self.nets.classifier,
            },
        )
        return TrainResult(
            out_dir=self.out_dir,
            fingerprint=fingerprint,
            config=self.cfg,
            model_config=model_config,
            nets=self.nets,
            classes=[int(c) for c in self.classes],
            history=list(self.history),
            best_epoch=self.best_epoch,
            best_val_map=self.best_map,
            stopped_early=self.stopped,
        )
