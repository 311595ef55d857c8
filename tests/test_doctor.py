"""``avsearch doctor``'s checks that need no model or index."""

from __future__ import annotations

from pathlib import Path

from avsearch.doctor import bf16_units, run_checks


def test_bf16_units_read_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert bf16_units(info) == ["amx_bf16", "avx512_bf16"]
    info.write_text("flags : fpu avx2\n")
    assert bf16_units(info) == []
    assert bf16_units(tmp_path / "absent") == []


def test_doctor_says_whether_bf16_can_pay(tmp_path: Path) -> None:
    checks = {c["name"]: c for c in run_checks(tmp_path / "no-index")}
    check = checks["bfloat16"]
    assert check["ok"] and not check["required"]
    assert "--precision" in check["detail"]
