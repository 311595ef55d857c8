"""Where weights files live and how they are read: a leaf module of ``avsearch.encoders``.

The model directory format (:mod:`~avsearch.encoders.model_dir`), the backbone registry
(:mod:`~avsearch.encoders.registry`) and the towers all need these few functions; keeping them
here, importing nothing else of avsearch but its errors, keeps the import graph acyclic.

- :func:`models_root`: the shipped model directories, ``models/`` of the source tree (or
  ``avsearch/_models`` in an installed wheel); ``$AVSEARCH_MODELS`` points elsewhere.
- :func:`package_file`: a data file inside an installed package, found without importing it.
- :func:`sha256_file`, :func:`check_safetensors`, :func:`load_safetensors`: weights are read
  from safetensors only (a pickle can run code when loaded).

Nothing here imports torch at import time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from avsearch.errors import ModelError

if TYPE_CHECKING:
    from torch import Tensor

MODELS_ENV = "AVSEARCH_MODELS"
PICKLE_HINT = "model weights are read from safetensors only: a pickle can run code when loaded"


def models_root() -> Path:
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser().resolve()
    packaged = Path(__file__).resolve().parents[1] / "_models"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "models"


def package_file(module: str, relpath: str) -> Path:
    """``relpath`` inside the installed package ``module``, found without importing it; when the
    package is not installed, a path naming it (``<module not installed>/relpath``), which does
    not exist."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return Path(f"<{module} not installed>") / relpath
    return Path(next(iter(spec.submodule_search_locations))) / relpath


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_safetensors(path: Path, what: str) -> None:
    """Refuse (ModelError) a file that is not safetensors, e.g. a pickle renamed to it.

    Checks the format's frame: an 8-byte little-endian header length, then a JSON header
    (``{...``) that fits in the file. Loading the tensors checks the rest.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(9)
            size = path.stat().st_size
    except OSError as exc:
        raise ModelError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    if len(head) == 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 2 <= n <= size - 8:
            return
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
        kind = "a pickle (a PyTorch checkpoint)"
    else:
        kind = "not a safetensors file"
    raise ModelError(f"{path}: {what} is {kind}, not safetensors; refused", hint=PICKLE_HINT)


def load_safetensors(path: Path, what: str) -> dict[str, Tensor]:
    """The tensors of a safetensors file; ModelError when it is missing, not safetensors, or
    damaged."""
    from safetensors.torch import load_file

    check_safetensors(path, what)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError and others for bad files
        raise ModelError(f"{path}: cannot read {what}: {exc}", hint=PICKLE_HINT) from exc


def convert_main(
    argv: Sequence[str] | None,
    module: str,
    what: str,
    sources: str,
    convert: Callable[[Path, Path | None], object],
) -> int:
    """``python -m avsearch.encoders.<module> convert SRC [DST]``: a public checkpoint to
    ``.safetensors`` once (shared by the loaders of checkpoints a user downloads)."""
    import argparse
    import logging
    import sys

    parser = argparse.ArgumentParser(
        prog=f"python -m avsearch.encoders.{module}", description=f"{what} backbone tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help=f"convert {sources} to .safetensors (run once)")
    conv.add_argument("src", type=Path, help=sources)
    conv.add_argument("dst", type=Path, nargs="?", default=None, help="default: SRC.safetensors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        convert(args.src, args.dst)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
