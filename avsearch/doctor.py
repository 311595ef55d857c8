"""``avsearch doctor``: check that the installation can do its job, offline."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any


def _check(name: str, fn: Any, required: bool = True) -> dict[str, Any]:
    try:
        detail = fn()
        return {"name": name, "ok": True, "detail": str(detail), "required": required}
    except Exception as exc:  # doctor reports every failure instead of stopping
        return {
            "name": name,
            "ok": False,
            "detail": f"{type(exc).__name__}: {exc}",
            "required": required,
        }


def bf16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The bfloat16 flags this CPU declares (``amx_bf16``, ``avx512_bf16``; Linux), which
    ``embed --precision bf16`` needs to be fast; empty when none or unknown."""
    try:
        flags = set(cpuinfo.read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return []
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


def run_checks(index_dir: Path) -> list[dict[str, Any]]:
    def python() -> str:
        return f"{platform.python_version()} on {platform.machine()}"

    def torch_() -> str:
        import torch

        return f"torch {torch.__version__}, {torch.get_num_threads()} threads"

    def faiss_() -> str:
        import faiss

        return f"faiss {faiss.__version__}"

    def codecs() -> str:
        import av

        needed = ["h264", "aac", "mp3float", "vorbis", "vp8", "opus", "flac"]
        missing = [c for c in needed if c not in av.codecs_available]
        if missing:
            raise RuntimeError(f"decoders missing: {', '.join(missing)}")
        return f"PyAV {av.__version__}: {', '.join(needed)} decoders present"

    def soundfile_() -> str:
        import soundfile as sf

        return f"libsndfile {sf.__libsndfile_version__}"

    def bfloat16() -> str:
        units = bf16_units()
        if not units:
            return "no bfloat16 units found: keep embed --precision fp32 (the default)"
        return f"{', '.join(units)}: embed --precision bf16 can run faster here (docs/cli.md)"

    def model() -> str:
        from avsearch.encoders.model import AVModel

        m = AVModel.load("default")
        m.audio_backbone  # noqa: B018 - loading is the check
        m.visual_backbone  # noqa: B018
        return f"{m.name} ({m.directory}), fingerprint {m.fingerprint[:12]}"

    return [
        _check("python", python),
        _check("torch", torch_),
        _check("faiss", faiss_),
        _check("codecs", codecs),
        _check("soundfile", soundfile_),
        _check("bfloat16", bfloat16, required=False),
        _check("default model and backbone weights", model),
        *_backbone_checks(),
        _index_check(index_dir),
    ]


def _default_parts() -> set[str]:
    """The atomic backbones the default model's towers are made of (none if it is broken: the
    model check reports that)."""
    from avsearch.encoders.model_dir import load_config, resolve_model_dir
    from avsearch.encoders.registry import BACKBONES

    try:
        config = load_config(resolve_model_dir("default"))
        return {p.name for t in (config.audio, config.visual) for p in BACKBONES.parts(t.backbone)}
    except Exception:  # doctor reports every failure instead of stopping
        return set()


def _backbone_checks() -> list[dict[str, Any]]:
    """One check per registered backbone with a weights file: is the file there? Required for
    the default model's backbones, a warning for the others."""
    from avsearch.encoders.registry import BACKBONES, weights_files
    from avsearch.errors import ModelError

    needed = _default_parts()
    checks = []
    for name, info in BACKBONES.items():
        if info.parts or not info.has_weights:
            continue

        def present(name: str = name) -> str:
            (found,) = weights_files(name)
            if not found.present:
                raise ModelError(f"not found at {found.path}; {found.hint}")
            return f"{found.path} ({found.source})"

        checks.append(_check(f"backbone {name}", present, required=name in needed))
    return checks


def _index_check(index_dir: Path) -> dict[str, Any]:
    """The index, by ``avsearch index check``'s rules (checksums included). No index is only a
    warning; a damaged one fails doctor with exit code 3 and names each problem."""
    from avsearch.store.integrity import check_index
    from avsearch.store.stats import index_stats

    try:
        report = check_index(index_dir)
    except Exception as exc:  # no index (or not a folder): a warning, as before
        return {
            "name": "index",
            "ok": False,
            "detail": f"{type(exc).__name__}: {exc}",
            "required": False,
        }
    if not report.ok:
        detail = "; ".join(str(p) for p in report.problems)
        return {
            "name": "index",
            "ok": False,
            "detail": f"{len(report.problems)} problem(s) at {index_dir}: {detail}; run "
            "`avsearch index repair`",
            "required": True,
            "exit_code": 3,
            "problems": [p.to_json() for p in report.problems],
        }

    def healthy() -> str:
        s = index_stats(index_dir)
        return (
            f"{s['files']} files, segments {s['segments']} at {index_dir}; "
            f"{len(report.checked)} integrity checks passed"
        )

    return _check("index", healthy, required=False)
