"""Where weights files live and how they are read: a leaf module of ``avsearch.encoders``.

The model directory format (:mod:`~avsearch.encoders.model_dir`), the backbone registry
(:mod:`~avsearch.encoders.registry`) and the towers all need these few functions; keeping them
here, importing nothing else of avsearch but its errors, keeps the import graph acyclic.

- :func:`models_root`: the shipped model directories, ``models/`` of the source tree (or
  ``avsearch/_models`` in an installed wheel); ``$AVSEARCH_MODELS`` points elsewhere.
- :func:`package_file`: a data file inside an installed package, found without importing it.
- :func:`sha256_file`, :func:`check_safetensors`, :func:`load_safetensors`: weights are read
  from safetensors only (a pickle can run code when loaded).
- :func:`require_file`, :func:`read_weights_file`, :func:`as_tensors`, :func:`load_strict`,
  :func:`run_rows`: what the loaders of public checkpoints a user downloads (VGGish, PANNs)
  share: a local ``.pth`` read with ``torch.load(weights_only=True)`` (or its ``.safetensors``
  conversion), checked against the network's state dict, then run in chunks.
- :func:`load_new`: a network built with its weights, its random initialisation skipped;
  :func:`weights_state`: when a copy made from them (a folded inference copy) is stale.
- :func:`convert_main`: their ``python -m avsearch.encoders.<module> convert`` command.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from avsearch.errors import ModelError

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

M = TypeVar("M", bound="nn.Module")
MODELS_ENV = "AVSEARCH_MODELS"
PICKLE_HINT = "model weights are read from safetensors only: a pickle can run code when loaded"
POINT_AT_IT = "give its path with --backbone-weights PATH or backbone_weights: in avsearch.yaml"
REFUSED = "it needs"


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
    with Path(path).open("rb") as fh:
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


def _numpy_array_globals() -> list[Any]:
    """The numpy globals a pickled numeric ndarray needs, under numpy 2's and numpy 1's names.

    They only rebuild arrays: an object array's items are unpickled by the same restricted
    unpickler, so anything else a file names (a class, ``os.system``) is still refused.
    """
    try:
        from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import (  # type: ignore[no-redef]
            _reconstruct,
            scalar,
        )
    return [
        _reconstruct,
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        np.ndarray,
        np.dtype,
        *(type(np.dtype(code)) for code in "?bBhHiIlLqQefd"),
    ]


def require_file(path: Path, what: str, source: str) -> Path:
    """``path`` if it is a file; else a one-line :class:`ModelError` saying where to get it."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{what} weights not found: {path} (get {source}, and {POINT_AT_IT})")
    return path


def read_weights_file(path: Path, what: str, source: str) -> dict[str, Any]:
    """The top-level dict of a local weights file, never executing code from it.

    ``.safetensors``: read by safetensors (a pickle renamed so is refused by its header).
    Anything else is a PyTorch ``.pth``, read with ``torch.load(map_location="cpu",
    weights_only=True)``, numeric numpy arrays allowed (:func:`_numpy_array_globals`); a file
    that needs more than that is refused. ``what`` names the weights in messages, ``source``
    says where to get them when the file is missing (one line, no hint).
    """
    import torch

    path = require_file(path, what, source)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises several error types for bad files
            raise ModelError(f"{path}: cannot read {what} weights as safetensors: {exc}") from exc
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for foreign globals, others for junk
        reason = _load_failure(exc)
        if reason.startswith(REFUSED):
            raise ModelError(
                f"{path}: refused: this {what} checkpoint needs more than "
                f"torch.load(weights_only=True) allows ({reason}); avsearch never runs code "
                "from a weights file"
            ) from exc
        raise ModelError(
            f"{path}: cannot read {what} weights: not a PyTorch checkpoint, or damaged "
            f"({type(exc).__name__}{': ' + reason if reason else ''})"
        ) from exc
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def _load_failure(exc: Exception) -> str:
    """The informative line of a ``torch.load`` error: the refused global, or what broke (not
    torch's advice to retry with ``weights_only=False``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        found = re.search(r"GLOBAL (\S+)", line)
        if found:
            return f"{REFUSED} the global {found.group(1)}"
        found = re.search(r"but got <class '([^']+)'>", line)
        if found:
            return f"{REFUSED} the type {found.group(1)}"
    boiler = ("Weights only load failed", "Please file", "Check the documentation", "(1)", "(2)")
    rest = [line for line in lines if not line.startswith(boiler) and "weights_only" not in line]
    return rest[0][:200] if rest else ""


def as_tensors(state: dict[str, Any], path: Path, what: str) -> dict[str, Tensor]:
    """Tensors (numpy arrays converted), floating point as float32."""
    import torch

    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{path}: {what} entry {key!r} is a {type(value).__name__}")
        out[str(key)] = value.float() if value.is_floating_point() else value
    return out


def load_strict(module: nn.Module, state: dict[str, Tensor], path: Path, what: str) -> None:
    """``module.load_state_dict(state, strict=True)``; a misfit is one :class:`ModelError` line
    naming the shape mismatches first, then the missing and the unexpected keys."""
    expected = module.state_dict()
    mismatched = [
        f"{k} {tuple(v.shape)} in the file, {tuple(expected[k].shape)} expected"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = [
        f"{len(items)} {label} (e.g. {', '.join(items[:2])})"
        for label, items in (
            ("size mismatches", mismatched),
            ("missing keys", missing),
            ("unexpected keys", unexpected),
        )
        if items
    ]
    if problems:
        raise ModelError(f"{path}: not {what} weights: {'; '.join(problems)}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        detail = " ".join(str(exc).split())
        raise ModelError(f"{path}: not {what} weights: {detail[:300]}") from exc


def weights_state(module: nn.Module) -> tuple[Any, ...]:
    """What a module's weights are now: each parameter's and buffer's device, storage and
    version counter (which in-place changes advance; tensors made under inference mode have
    none, and cannot be changed outside it). A copy made from the weights (a tower's folded
    inference copy) is made again when this changes."""
    return tuple(
        (t.device, t.data_ptr(), 0 if t.is_inference() else t._version)
        for t in (*module.parameters(), *module.buffers())
    )


def load_new(factory: Callable[[], M], state: dict[str, Tensor], path: Path, what: str) -> M:
    """``factory()``, its weights ``state`` (strictly; floating point as float32), built on
    the meta device so that its own random initialisation, which loading overwrites, is never
    computed (for the default model's three networks it cost a quarter of a second of every
    cold ``query``). A misfit is :class:`ModelError` ``"PATH: not WHAT weights: ..."``."""
    import torch

    with torch.device("meta"):
        module = factory()
    # fresh contiguous copies, as loading into initialised weights made: tensors read from a
    # file may share one storage or sit unaligned, and the kernels then round differently
    state = {
        k: v.to(torch.float32 if v.is_floating_point() else v.dtype, copy=True).contiguous()
        for k, v in state.items()
    }
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # one line: torch's message spans several
        detail = " ".join(str(exc).split())
        raise ModelError(f"{path}: not {what} weights: {detail[:300]}") from exc
    left = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if left:  # a tensor the state dict does not hold (strict loading should have said so)
        raise ModelError(f"{path}: not {what} weights: no values for {', '.join(left[:3])}")
    return module


def run_rows(
    forward: Callable[[Tensor], Tensor],
    waves: np.ndarray,
    dim: int,
    chunk: int,
    device: torch.device,
) -> np.ndarray:
    """``forward`` over ``float32 [B, n]`` rows in chunks of ``chunk`` under
    ``torch.inference_mode`` -> ``float32 [B, dim]``. A 1-D array is one row; ``forward`` pads
    short rows to its window itself and takes longer ones whole."""
    import torch

    arr = np.asarray(waves, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"expected waveforms of shape [B, n], got {arr.shape}")
    if arr.shape[0] == 0:
        return np.zeros((0, dim), dtype=np.float32)
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, arr.shape[0], chunk):
            rows = torch.from_numpy(np.ascontiguousarray(arr[start : start + chunk]))
            out.append(forward(rows.to(device)).float().cpu().numpy())
    return np.concatenate(out, axis=0)


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
