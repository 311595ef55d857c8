"""Fit the native spaces of an existing model directory from a folder's features.

    python -m avsearch.train.native MODEL_DIR PATH... [--cache DIR] [--dim D] [--centred]

The media under PATH are read as ``avsearch train`` reads them (backbone features from the
feature cache in ``--cache``, or decoded into it), every window once; the native spaces
(:mod:`avsearch.encoders.native`) are fitted on them and written into MODEL_DIR
(``native.safetensors`` and the ``native:`` section of ``config.yaml``, which records this
command). Its fingerprint changes: an index built with it before is re-embedded with
``avsearch embed PATH --model DIR --rebuild`` (from its feature cache: no decoding).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from avsearch.encoders.backbones import Backbones
from avsearch.encoders.model_dir import load_config
from avsearch.encoders.native import (
    DEFAULT_CENTRED,
    DEFAULT_DIM,
    NativeSpace,
    fit_native,
    windows_by_modality,
    write_native,
)
from avsearch.train.pairs import extract_features
from avsearch.train.run import data_record


def fit_native_for_model(
    model_dir: Path,
    paths: Iterable[Path],
    cache_dir: Path,
    *,
    parts: Mapping[str, Sequence[str]] | None = None,
    dim: int = DEFAULT_DIM,
    centred: bool = DEFAULT_CENTRED,
) -> NativeSpace:
    """Fit the native spaces of the model in ``model_dir`` on the features of the media under
    ``paths`` (read from, or decoded into, the feature cache in ``cache_dir``) and write them
    into the directory; returns them."""
    from avsearch.media.decode import WindowSpec

    model_dir = Path(model_dir)
    config = load_config(model_dir)
    roots = [Path(p) for p in paths]
    backbones = Backbones(
        config.audio.backbone,
        config.visual.backbone,
        audio_sha256=config.audio.backbone_sha256,
        visual_sha256=config.visual.backbone_sha256,
    )
    declared = backbones.audio_input
    spec = WindowSpec(declared.window_samples, declared.sample_rate)
    files, _ = extract_features(roots, Path(cache_dir), backbones, spec, lambda p: None)
    record = data_record(roots, [f.file.path for f in files])
    command = ["python -m avsearch.train.native", str(model_dir), *map(str, roots)]
    command += ["--dim", str(dim)] + (["--centred"] if centred else [])
    fitted_on: dict[str, Any] = {
        "files": record["files"],
        "digest": record["digest"],
        "command": " ".join(command),
    }
    space = fit_native(
        windows_by_modality(files),
        {"audio": config.audio.backbone, "visual": config.visual.backbone},
        parts=parts,
        dim=dim,
        centred=centred,
        fitted_on=fitted_on,
    )
    write_native(model_dir, space)
    return space


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avsearch.train.native",
        description="Fit a model directory's native spaces on the media under PATH...",
    )
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("paths", type=Path, nargs="+")
    parser.add_argument("--cache", type=Path, default=Path(".avsearch"), help="feature cache dir")
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM)
    parser.add_argument("--centred", action="store_true", help="subtract the features' mean")
    args = parser.parse_args(argv)
    space = fit_native_for_model(
        args.model_dir, args.paths, args.cache, dim=args.dim, centred=args.centred
    )
    for modality, tower in space.towers.items():
        print(f"{modality}: {'+'.join(tower.parts)} -> {tower.dim}-d")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
