"""Clip export (avsearch.export, query --export/--pad): packets copied where a keyframe is
near, re-encoded where not, sounds as WAV, pictures copied, a contact sheet; every file plays;
bad folders refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from avsearch import export
from avsearch.cli import app
from avsearch.query import Hit, QueryResult
from tests.mediagen import encode_audio, encode_frames, tone, write_png, write_wav
from tests.test_report import fake_model, indexed  # noqa: F401 (fixtures)

runner = CliRunner()


def write_video(path: Path, fmt: str, vcodec: str, acodec: str, seconds: float, keyint: int):
    """A video with a keyframe every ``keyint`` frames (10 fps) and nowhere else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream(vcodec, rate=10)
        v.width, v.height, v.pix_fmt = 96, 64, "yuv420p"
        v.gop_size = keyint
        if vcodec == "libx264":
            v.options = {"x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"}
        else:
            v.options = {"auto-alt-ref": "0", "kf_max_dist": str(keyint)}
        a = out.add_stream(acodec, rate=48000)
        a.layout = "mono"
        encode_frames(out, v, seconds, 10, (96, 64), 1000.0)  # one colour: no scene cuts
        encode_audio(out, a, tone(440.0, seconds, 48000), 48000, step=960)
    return path


def probe(path: Path) -> tuple[float, int, bool]:
    """(duration s, decoded video frames, has audio) - decoding it all proves it plays."""
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(video=0))
        has_audio = bool(c.streams.audio)
        if has_audio:
            c.seek(0)
            assert sum(f.samples for f in c.decode(audio=0)) > 0
        return float(c.duration or 0) / 1e6, frames, has_audio


def keyframes(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [
            float(p.pts * p.time_base) for p in c.demux(s) if p.is_keyframe and p.pts is not None
        ]


def _result(*hits: Hit) -> QueryResult:
    return QueryResult("q.wav", "audio", "visual", "m", True, list(hits))


@pytest.mark.parametrize(
    ("fmt", "ext", "vcodec", "acodec"),
    [("mp4", ".mp4", "libx264", "aac"), ("matroska", ".mkv", "libx264", "libopus"),
     ("webm", ".webm", "libvpx", "libopus")],
)  # fmt: skip
def test_video_hit_is_copied_from_the_keyframe_before_with_padding(
    tmp_path: Path, fmt: str, ext: str, vcodec: str, acodec: str
) -> None:
    src = write_video(tmp_path / f"v{ext}", fmt, vcodec, acodec, seconds=12.0, keyint=20)
    assert keyframes(src)[:4] == pytest.approx([0.0, 2.0, 4.0, 6.0])
    out = tmp_path / "out"
    out.mkdir()
    hit = Hit(1, 0.9, str(src), 5.0, 7.0, "visual", 1)
    summary = export.export_hits(_result(hit), out, pad=0.5)
    (f,) = summary.files
    assert f.method == "copy" and f.path.suffix == ext
    assert f.start == pytest.approx(4.0)  # the keyframe at or before 4.5 s
    assert f.end == pytest.approx(7.5)
    assert f.path.name == f"01_v_4.00-7.50s{ext}"
    duration, frames, has_audio = probe(f.path)
    assert 3.3 <= duration <= 4.0 and 33 <= frames <= 37 and has_audio
    assert summary.contact_sheet is not None and summary.contact_sheet.is_file()


def test_a_far_keyframe_means_re_encoding_exactly_the_padded_range(tmp_path: Path) -> None:
    src = write_video(tmp_path / "long.mp4", "mp4", "libx264", "aac", seconds=20.0, keyint=300)
    assert keyframes(src) == [0.0]
    out = tmp_path / "out"
    out.mkdir()
    summary = export.export_hits(_result(Hit(3, 0.5, str(src), 14.0, 16.0, "visual", 9)), out)
    (f,) = summary.files
    assert f.method == "reencode" and f.path.name == "03_long_13.00-17.00s.mp4"
    duration, frames, has_audio = probe(f.path)
    assert 3.8 <= duration <= 4.3 and 38 <= frames <= 42 and has_audio


def test_sound_hits_become_wav_and_images_are_copied(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "src" / "beep ü.wav", freq=1000.0, seconds=4.0)
    png = write_png(tmp_path / "src" / "red.png", (220, 20, 20))
    out = tmp_path / "out"
    out.mkdir()
    summary = export.export_hits(
        _result(
            Hit(1, 0.9, str(wav), 1.0, 2.0, "audio", 1),
            Hit(2, 0.8, str(png), None, None, "visual", 2),
            Hit(3, 0.7, str(tmp_path / "src" / "gone.wav"), 0.0, 1.0, "audio", 3),
        ),
        out,
        pad=0.25,
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["01_beep_ü_0.75-2.25s.wav", "02_red.png", "contact_sheet.png"]
    samples, rate = sf.read(out / names[0])
    assert rate == 44100 and len(samples) == pytest.approx(1.5 * 44100, abs=2)
    assert np.abs(samples).max() > 0.3  # the tone, not silence
    assert (out / "02_red.png").read_bytes() == png.read_bytes()
    assert len(summary.failures) == 1 and "gone.wav" in summary.failures[0]
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == (export.SHEET_CELL, export.SHEET_CELL + 18)


def test_cli_export_writes_every_hit_and_reports_it(indexed: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "clips" / "new"  # created when missing
    clip = str(indexed / "sounds" / "beep.wav")
    args = ["--json", "query", clip, "--export", str(out), "--pad", "0.5"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    files = data["export"]["files"]
    assert len(files) == len(data["results"]) and not data["export"]["failures"]
    for f, hit in zip(files, data["results"], strict=True):
        assert f["rank"] == hit["rank"] and f["source"] == hit["path"]
        assert Path(f["path"]).is_file() and Path(f["path"]).name.startswith(f"{hit['rank']:02d}_")
    assert {f["method"] for f in files} == {"copy", "image"}
    assert data["export"]["contact_sheet"] == str(out / "contact_sheet.png")
    assert "exported" in result.stderr


def test_cli_export_of_a_missing_source_exits_4_with_the_rest_written(
    indexed: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    (indexed / "pictures" / "p2.png").unlink()
    out = tmp_path / "clips"
    result = runner.invoke(
        app,
        ["--json", "query", str(indexed / "sounds" / "beep.wav"), "--export", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 4, result.stderr
    data = json.loads(result.stdout)
    assert len(data["export"]["failures"]) == 1 and "p2.png" in data["export"]["failures"][0]
    assert len(data["export"]["files"]) == len(data["results"]) - 1
    assert "not exported" in result.stderr and "Traceback" not in result.stderr


def test_unwritable_export_folder_is_one_line_exit_2(tmp_path: Path, index_env: Path) -> None:
    clip = write_wav(tmp_path / "a.wav")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for bad in (blocker, blocker / "sub"):
        result = runner.invoke(app, ["query", str(clip), "--export", str(bad)])
        assert result.exit_code == 2, result.stderr
        lines = [x for x in result.stderr.splitlines() if x.strip() and "hint" not in x]
        assert len(lines) == 1 and "cannot export into" in lines[0]
        assert "Traceback" not in result.stderr
    result = runner.invoke(app, ["query", str(clip), "--export", str(tmp_path), "--pad", "-1"])
    assert result.exit_code == 2 and "--pad must be between 0 and 60" in result.stderr
    result = runner.invoke(app, ["query", str(clip), "--pad", "2"])
    assert result.exit_code == 2 and "--pad applies to --export only" in result.stderr


def test_file_names_are_safe() -> None:
    hit = Hit(7, 0.1, "/m/a b/we?ird:name*.mp4", 1.0, 2.5, "visual", 1)
    assert export.file_name(hit, 0.0, 3.5) == "07_we_ird_name_0.00-3.50s"
    name = "/m/" + b"bad\xff.png".decode("utf-8", "surrogateescape")
    bad = Hit(12, 0.1, name, None, None, "visual", 1)
    assert export.file_name(bad) == "12_bad_ff"
