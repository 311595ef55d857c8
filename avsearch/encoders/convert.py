"""Convert the aisfx PyPI checkpoint into a shipped backbone directory (run once, offline).

Usage::

    python -m avsearch.encoders.convert SRC DST_DIR

``SRC`` is ``aisfx/models/checkpoint.pth`` from the PyPI wheel ``aisfx`` 0.1.2 (a pickled
``(state_dict, dataset_info)`` tuple; the state dict holds ``embedding_net.*`` and the nine
classifier heads ``fc.N.*``). It is read with ``torch.load(weights_only=True)``, allowing only
the numpy scalar/dtype globals its ``dataset_info`` needs. ``DST_DIR`` receives
``model.safetensors`` (the embedding network only, keys without the ``embedding_net.``
prefix), ``LICENSE.md`` (CC BY 4.0 attribution) and ``config.yaml``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avsearch.encoders import audio_frontend as fe
from avsearch.encoders.aisfx import FEATURE_DIM, AisfxNet
from avsearch.encoders.files import sha256_file
from avsearch.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = ["SOURCE_PACKAGE", "SOURCE_VERSION", "convert_aisfx_checkpoint", "main"]

SOURCE_PACKAGE = "aisfx"
SOURCE_VERSION = "0.1.2"
PREFIX = "embedding_net."

LICENSE_TEXT = """\
# aisfx backbone weights: attribution and licence

`model.safetensors` in this folder is the audio embedding network **aisfx** (model
X-Sequential-CE) by **Alison B. Ma and Alexander Lerch**, from:

> Alison B. Ma and Alexander Lerch, "Representation Learning for the Automatic Indexing of
> Sound Effects Libraries", Proceedings of the 23rd International Society for Music
> Information Retrieval Conference (ISMIR 2022).
> Code and weights: https://github.com/alisonbma/aisfx (PyPI package `aisfx`).

The weights are licensed under the **Creative Commons Attribution 4.0 International licence
(CC BY 4.0)**, https://creativecommons.org/licenses/by/4.0/ .

## Changes made

They were converted from `aisfx/models/checkpoint.pth` of the PyPI package `aisfx` {version}
(sha256 `{sha256}`) by `avsearch.encoders.convert`:

- format: PyTorch pickle -> safetensors (float32 values unchanged; BatchNorm
  `num_batches_tracked` counters kept as int64);
- key names: the `embedding_net.` prefix was removed (e.g.
  `embedding_net.conv_block1.conv1.weight` -> `conv_block1.conv1.weight`);
- the nine per-dataset classifier heads (`fc.*`) and the pickled dataset information were
  dropped; only the 512-d embedding network is kept.

No weight values were changed. The network and its log-mel front-end are re-implemented in
`avsearch/encoders/aisfx.py` and `avsearch/encoders/audio_frontend.py`.
"""


def _numpy_safe_globals() -> list[Any]:
    """The numpy globals the aisfx pickle references, and nothing else.

    Its dataset info holds ``numpy.int64`` scalars, pickled as ``numpy.core.multiarray.scalar``
    applied to a ``numpy.dtype`` (whose state is then set on an ``Int64DType`` instance).
    """
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        np.dtype,
        type(np.dtype(np.int64)),
    ]


def load_aisfx_checkpoint(src: Path) -> tuple[dict[str, torch.Tensor], Any]:
    """Read the aisfx ``(state_dict, dataset_info)`` pickle with ``weights_only=True``.

    A pickle that needs anything beyond tensors and the few numpy globals above (a class, a
    function such as ``os.system``) is refused with a ModelError, never executed.
    """
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for foreign globals, RuntimeError for junk
        raise ModelError(
            f"{src}: refused: not a weights-only aisfx checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            hint="give aisfx/models/checkpoint.pth of the aisfx 0.1.2 wheel",
        ) from exc
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], dict)):
        raise ModelError(f"{src}: expected a (state_dict, dataset_info) tuple")
    return obj[0], obj[1]


def _config_yaml(sha256: str) -> str:
    return f"""\
# aisfx audio backbone, converted by avsearch.encoders.convert (see LICENSE.md)
name: aisfx
version: "{SOURCE_VERSION}"
modality: audio
dim: {FEATURE_DIM}
sample_rate: {fe.SAMPLE_RATE}
license: CC-BY-4.0
source:
  package: {SOURCE_PACKAGE}
  version: "{SOURCE_VERSION}"
  file: aisfx/models/checkpoint.pth
  sha256: {sha256}
frontend:
  n_fft: {fe.N_FFT}
  hop: {fe.HOP}
  window: hann-periodic
  center: true
  pad_mode: constant
  n_mels: {fe.N_MELS}
  mel_scale: htk
  mel_norm: l1
  f_min: {fe.F_MIN}
  f_max: {fe.F_MAX}
  power: 2.0
  log_scale: {fe.LOG_SCALE}
  spec_max: {fe.SPEC_MAX!r}
  peak_normalize: per-window
  peak_floor: {fe.PEAK_FLOOR:.1e}
  block_frames: {fe.BLOCK_FRAMES}
  window_samples: {fe.WINDOW_SAMPLES}
"""


def convert_aisfx_checkpoint(src: Path, dst_dir: Path) -> Path:
    """Write ``dst_dir/{model.safetensors,LICENSE.md,config.yaml}``; returns the weights path."""
    from safetensors.torch import save_file

    src, dst_dir = Path(src), Path(dst_dir)
    if not src.is_file():
        raise ModelError(f"aisfx checkpoint not found: {src}")
    sha = sha256_file(src)
    state, _dataset_info = load_aisfx_checkpoint(src)

    kept: dict[str, torch.Tensor] = {}
    dropped = 0
    for key, tensor in state.items():
        if not key.startswith(PREFIX):
            dropped += 1
            continue
        value = tensor.detach().cpu()
        if value.is_floating_point():
            value = value.to(torch.float32)
        kept[key[len(PREFIX) :]] = value.contiguous()

    net = AisfxNet()
    expected = set(net.state_dict())
    if set(kept) != expected:
        missing = sorted(expected - set(kept))
        extra = sorted(set(kept) - expected)
        raise ModelError(f"{src}: unexpected aisfx keys (missing {missing}, extra {extra})")
    net.load_state_dict(kept, strict=True)  # shapes check

    dst_dir.mkdir(parents=True, exist_ok=True)
    out = dst_dir / "model.safetensors"
    metadata = {
        "name": "aisfx",
        "source": f"{SOURCE_PACKAGE}=={SOURCE_VERSION} models/checkpoint.pth",
        "source_sha256": sha,
        "license": "CC-BY-4.0",
    }
    save_file(kept, str(out), metadata=metadata)
    out.chmod(0o644)
    (dst_dir / "LICENSE.md").write_text(
        LICENSE_TEXT.format(version=SOURCE_VERSION, sha256=sha), encoding="utf-8"
    )
    (dst_dir / "config.yaml").write_text(_config_yaml(sha), encoding="utf-8")
    logger.info(
        "wrote %s (%d tensors kept, %d classifier tensors dropped, %.1f MB)",
        out,
        len(kept),
        dropped,
        out.stat().st_size / 1e6,
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avsearch.encoders.convert",
        description="Convert the aisfx PyPI checkpoint into an avsearch backbone directory.",
    )
    parser.add_argument("src", type=Path, help="aisfx/models/checkpoint.pth (aisfx 0.1.2 wheel)")
    parser.add_argument("dst_dir", type=Path, help="output folder, e.g. models/backbones/aisfx")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert_aisfx_checkpoint(args.src, args.dst_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
