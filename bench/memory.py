"""Peak memory of `avsearch embed` on one long file: a 1-hour wav and a 1-hour video.

    python bench/memory.py [--minutes 60]

Generates (streamed, never whole in memory) a wav (44.1 kHz mono 16-bit: a tone that changes
every second, over noise) and a low-resolution video (64×48 at 5 fps H.264, AAC audio at
22.05 kHz mono), embeds each with the default model in its own `avsearch embed` process and
reads that process's peak RSS (``ru_maxrss`` from ``os.wait4``). A process that only imports
avsearch and loads the default model's heads and backbones gives the baseline (weights and
libraries). Writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fractions
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf
from _common import feature_cache_rates, machine_line, write_section

WAV_RATE = 44100
VIDEO_AUDIO_RATE = 22050
FPS = 5
SIZE = (64, 48)
COLOURS = [(220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 230, 30), (200, 30, 200)]


def signal(start: int, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Samples [start, start + n) of a tone whose pitch changes every second, over noise."""
    t = np.arange(start, start + n) / rate
    freq = 200.0 + 50.0 * (np.floor(t) % 17)
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


def write_long_wav(path: Path, seconds: int) -> None:
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", WAV_RATE, 1, subtype="PCM_16") as fh:
        for s in range(0, seconds, 10):  # 10 s at a time
            n = min(10, seconds - s) * WAV_RATE
            fh.write(signal(s * WAV_RATE, n, WAV_RATE, rng))


def write_long_video(path: Path, seconds: int) -> None:
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height = SIZE
        v.pix_fmt = "yuv420p"
        v.options = {"preset": "ultrafast"}
        a = out.add_stream("aac", rate=VIDEO_AUDIO_RATE)
        a.layout = "mono"
        frame_samples = 1024
        sample = 0
        for i in range(seconds * FPS):
            arr = np.empty((SIZE[1], SIZE[0], 3), np.uint8)
            arr[:] = COLOURS[(i // (FPS * 3)) % len(COLOURS)]  # a new colour every 3 s
            arr[: SIZE[1] // 2, : SIZE[0] // 2] = (i * 7) % 256  # and a moving corner
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            out.mux(v.encode(frame))
            while sample < (i + 1) * VIDEO_AUDIO_RATE // FPS:
                x = signal(sample, frame_samples, VIDEO_AUDIO_RATE, rng)
                af = av.AudioFrame.from_ndarray(x[np.newaxis, :], format="fltp", layout="mono")
                af.sample_rate = VIDEO_AUDIO_RATE
                af.pts = sample
                af.time_base = fractions.Fraction(1, VIDEO_AUDIO_RATE)
                out.mux(a.encode(af))
                sample += frame_samples
        out.mux(v.encode(None))
        out.mux(a.encode(None))


def peak_run(cmd: list[str], work: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes) and stdout of one child process."""
    out, err = work / "stdout", work / "stderr"
    t = time.perf_counter()
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 4):
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read_text()[-2000:]}")
    return wall, usage.ru_maxrss * 1024, out.read_text()


BASELINE = """
from avsearch.encoders.model import AVModel
m = AVModel.load("default")
_ = m.heads, m.audio_backbone, m.visual_backbone
import numpy as np
m.embed("audio", np.zeros((1, 102400), np.float32))
m.embed("visual", np.zeros((1, 224, 224, 3), np.uint8))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=60)
    args = ap.parse_args()
    seconds = args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="avsearch-memory-"))
    rows: list[tuple[str, float, float, int, dict[str, Any]]] = []
    try:
        wav, video = work / "long.wav", work / "long.mp4"
        t = time.perf_counter()
        write_long_wav(wav, seconds)
        t_wav = time.perf_counter() - t
        t = time.perf_counter()
        write_long_video(video, seconds)
        t_video = time.perf_counter() - t
        _, base_rss, _ = peak_run([sys.executable, "-c", BASELINE], work)
        for name, path in (("wav", wav), ("video", video)):
            cmd = ["avsearch", "--index", str(work / f"index-{name}"), "--json", "embed"]
            wall, rss, out = peak_run([*cmd, str(path)], work)
            rows.append((name, path.stat().st_size / 2**20, wall, rss, json.loads(out)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    dims = feature_cache_rates()
    lines = [
        "## Peak memory on one long file",
        "",
        f"`python bench/memory.py --minutes {args.minutes}` on {dt.date.today().isoformat()}; "
        f"{machine_line()}.",
        f"Inputs, generated streamed: a {args.minutes}-minute wav (44.1 kHz mono 16-bit, "
        f"{t_wav:.0f} s to write) and a {args.minutes}-minute video (64×48 at 5 fps H.264 + "
        f"AAC 22.05 kHz mono, {t_video:.0f} s to write). Each embed is its own "
        "`avsearch --index I embed FILE` process with the default model and settings (the "
        "feature cache written); peak RSS is its `ru_maxrss` (`os.wait4`).",
        "",
        "| file | MiB | wall s | segments (audio + visual) | peak RSS MiB |",
        "|---|---:|---:|---|---:|",
        f"| (baseline: a process that loads the default model and encodes one window of each "
        f"modality) | – | – | – | {base_rss / 2**20:.0f} |",
    ]
    for name, mib, wall, rss, s in rows:
        seg = s["segments"]
        lines.append(
            f"| {name} | {mib:.0f} | {wall:.0f} | {seg['encoded']} ({seg['audio']} + "
            f"{seg['visual']}) | {rss / 2**20:.0f} |"
        )
    lines += [
        "",
        "What bounds it: decoding streams (soundfile blocks of 64 Ki samples, PyAV packets, "
        "one frame kept per window), at most 256 decoded windows wait in the decoder queue "
        "(≤ 100 MB of audio windows, 38 MB of frames), the encoder holds one batch, and what "
        "a file keeps until it is committed grows by its 128-d vectors (0.5 KiB per segment) "
        "plus, when the feature cache is written, its raw backbone features "
        f"({dims[0] * 4 / 1024:.0f} KiB per audio window, {dims[1] * 4 / 1024:.0f} KiB per "
        f"frame: about {dims[2]:.0f} MB per hour of video).",
    ]
    doc = write_section("memory", "\n".join(lines))
    print("\n".join(lines))
    print(f"\nwritten to {doc}")


if __name__ == "__main__":
    main()
