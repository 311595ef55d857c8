"""Per-epoch training checkpoints: tensors in safetensors, everything else in JSON.

``checkpoint/state-<epoch>.safetensors`` holds the student, the teacher, the best-so-far student and
the optimizer state (flattened to tensors as ``optim.<param index>.<name>``);
``checkpoint/state.json`` holds the epoch, early-stopping state, the optimizer's param-group
hyper-parameters, the history of epoch records and the name of its tensors file. Nothing is
pickled. Each file is written to a temporary name and renamed; the JSON is renamed last and
only then is the previous tensors file deleted, so a crash at any moment leaves one complete,
consistent checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from avsearch.errors import AvsearchError

FORMAT = 1
META = "state.json"


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[Any]]:
    """(tensors keyed ``optim.<i>.<name>``, JSON-able param groups) of an optimizer."""
    state = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    for idx, per_param in state["state"].items():
        for name, value in per_param.items():
            t = value if isinstance(value, Tensor) else torch.tensor(value)
            tensors[f"optim.{idx}.{name}"] = t.detach().clone().contiguous()
    return tensors, state["param_groups"]


def optimizer_from_tensors(
    opt: torch.optim.Optimizer, tensors: dict[str, Tensor], param_groups: list[Any]
) -> None:
    per_param: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        _, idx, name = key.split(".", 2)
        per_param.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": per_param, "param_groups": param_groups})


def prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v.detach().clone().contiguous() for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    head = prefix + "."
    return {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}


def save_checkpoint(
    directory: Path, epoch: int, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    name = f"state-{epoch:05d}.safetensors"
    tmp = directory / f".{name}.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(directory / name)
    tmp = directory / f".{META}.tmp"
    body = {"format": FORMAT, "epoch": epoch, "tensors": name, **meta}
    tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
    tmp.replace(directory / META)
    for old in directory.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def has_checkpoint(directory: Path) -> bool:
    return (directory / META).is_file()


def load_checkpoint(directory: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / str(meta["tensors"])))
    except (OSError, ValueError, KeyError) as exc:
        raise AvsearchError(
            f"{directory}: cannot read the training checkpoint ({exc})",
            hint="delete the checkpoint folder and train again without --resume",
        ) from exc
    if meta.get("format") != FORMAT:
        raise AvsearchError(f"{directory}: checkpoint format {meta.get('format')} is unknown")
    return tensors, meta


def clear_checkpoint(directory: Path) -> None:
    (directory / META).unlink(missing_ok=True)
    for old in directory.glob("state-*.safetensors"):
        old.unlink(missing_ok=True)
