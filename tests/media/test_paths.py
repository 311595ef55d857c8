import json
import os
from pathlib import Path

from avsearch.media.paths import (
    display_path,
    display_text,
    is_utf8,
    json_safe,
    path_fields,
    path_from_b64,
)

BAD = os.fsdecode(b"/m/bad\xff\xfe.webp")  # as os.listdir gives a non-UTF-8 name


def test_display_path_escapes_undecodable_bytes_and_keeps_utf8() -> None:
    assert display_path(BAD) == "/m/bad\\xff\\xfe.webp"
    assert display_path(Path(BAD)) == "/m/bad\\xff\\xfe.webp"
    assert display_path("/m/ünï ☃.wav") == "/m/ünï ☃.wav"
    assert display_text("lone \ud800 surrogate") == "lone \\ud800 surrogate"  # never raises
    assert is_utf8("/m/ünï.wav") and not is_utf8(BAD)


def test_path_fields_are_valid_utf8_json_and_lossless() -> None:
    assert path_fields("/m/ünï.wav") == {"path": "/m/ünï.wav"}  # no extra field when not needed
    fields = path_fields(BAD, "query")
    assert fields["query"] == "/m/bad\\xff\\xfe.webp"
    assert path_from_b64(fields["query_b64"]) == BAD
    json.dumps(fields, ensure_ascii=False).encode("utf-8")


def test_json_safe_cleans_every_string() -> None:
    data = {BAD: [BAD, {"reason": f"cannot open {BAD}"}], "n": 1, "t": (BAD,)}
    clean = json_safe(data)
    text = json.dumps(clean, ensure_ascii=False)
    text.encode("utf-8")  # would raise on a surrogate
    assert clean["n"] == 1 and clean["t"] == [display_path(BAD)]
    assert clean[display_path(BAD)][1]["reason"] == "cannot open /m/bad\\xff\\xfe.webp"
