"""The results page: one self-contained HTML file a person can look at and listen to.

``avsearch query FILE --html results.html`` writes the query (its picture, or its sound as a
player and a spectrogram) and, for each hit, the frame at the hit's time (a spectrogram for a
sound hit), a player that starts at the hit's start, the path, the time range, the score (and
what it is: the space that ranked the hits heads the page; a fused score is marked so, with the
hit's heads cosine beside it) and the confidence. Everything is inside the file as data URIs
(WebP thumbnails, Ogg/Opus sound, WebM clips) and a Content-Security-Policy forbids any other
source, so the page never reaches the network and still works when mailed, moved, or when the
media are gone.

Video hits carry a short transcoded clip (VP8 + Opus, at most ``PageOptions.clip_seconds`` from
the hit's start, 320 px), not a player seeking into the source: a seeking player needs the
source file to stay where it is, a browser that plays its container and codec (none plays AVI,
few play H.265 or Matroska with H.264), and file access from the page; a clip of a few seconds
costs ~20-60 kB and plays anywhere.

A hit whose file cannot be read any more (moved or deleted since it was indexed) is listed with
the reason instead of its media; the page is written all the same.
"""

from __future__ import annotations

import base64
import html
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from avsearch.errors import AvsearchError, MediaError, UsageError
from avsearch.media import excerpt
from avsearch.media.discover import media_kind
from avsearch.media.paths import display_path
from avsearch.query import Hit, QueryResult
from avsearch.spaces import score_kind, score_meaning

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class PageOptions:
    sound_seconds: float = 10.0  # longest sound per hit
    query_seconds: float = 30.0  # longest sound of the query
    clip_seconds: float = 6.0  # longest video clip per hit
    thumb_side: int = 240


@dataclass
class PageSummary:
    path: Path
    bytes: int = 0
    images: int = 0
    sounds: int = 0
    clips: int = 0
    unavailable: list[str] = field(default_factory=list)  # "path: reason" of unreadable hits


def check_output_file(path: Path, what: str = "results page") -> Path:
    """``path`` made absolute, or UsageError when a file cannot be written there (checked by
    creating and removing a temporary file beside it, so it holds for root too)."""
    path = path.expanduser().absolute()
    if path.is_dir():
        raise UsageError(f"cannot write the {what} {display_path(path)}: it is a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".avsearch-", delete=True):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(
            f"cannot write the {what} {display_path(path)}: {reason}",
            hint="give a path in an existing folder you can write to",
        ) from exc
    return path


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _span(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return ""
    return f"{start:.2f}–{end:.2f} s"


class _Builder:
    def __init__(self, options: PageOptions, summary: PageSummary) -> None:
        self.o = options
        self.s = summary

    def img(self, data: bytes, mime: str, alt: str, cls: str) -> str:
        self.s.images += 1
        return f'<img class="{cls}" alt="{_e(alt)}" src="{_uri(data, mime)}">'

    def picture(self, path: Path, kind: str, t: float | None, alt: str) -> str:
        data, mime = excerpt.thumbnail(excerpt.picture(path, kind, t), self.o.thumb_side)
        return self.img(data, mime, alt, "thumb")

    def sound(self, path: Path, start: float, end: float, spectro: bool) -> str:
        """A player of [start, end) (and its spectrogram); '' when there is no sound."""
        samples = excerpt.audio_range(path, start, end)
        if samples.size == 0:
            return ""
        out = ""
        if spectro:
            small = samples[:: excerpt.OPUS_RATE // excerpt.SPECTRO_RATE]
            data, mime = excerpt.thumbnail(excerpt.spectrogram(small), self.o.thumb_side, 80)
            out += self.img(data, mime, "spectrogram", "spectro")
        self.s.sounds += 1
        src = _uri(excerpt.encode_opus(samples), "audio/ogg")
        label = f"sound from {start:.2f} s"
        return out + f'<audio controls preload="metadata" title="{label}" src="{src}"></audio>'

    def clip(self, path: Path, start: float, end: float) -> str:
        data = excerpt.video_clip(path, start, end)
        self.s.clips += 1
        return (
            f"<details><summary>video clip, {start:.2f}–{end:.2f} s</summary>"
            f'<video controls preload="metadata" src="{_uri(data, "video/webm")}"></video>'
            "</details>"
        )

    def media(self, path: Path, modality: str, start: float | None, end: float | None) -> str:
        """Picture, spectrogram, sound player and clip of one hit (or of the query)."""
        kind = media_kind(path) or "image"
        parts: list[str] = []
        if kind == "image":
            parts.append(self.picture(path, kind, None, "picture"))
            return "".join(parts)
        lo = start or 0.0
        if kind == "video":
            mid = lo if end is None else (lo + end) / 2
            parts.append(self.picture(path, kind, mid, f"frame at {mid:.2f} s"))
        cap = self.o.query_seconds if end is None else self.o.sound_seconds
        hi = lo + cap if end is None else min(end, lo + cap)
        try:
            parts.append(self.sound(path, lo, hi, spectro=kind == "audio" or modality == "audio"))
        except MediaError as exc:
            if kind == "audio":
                raise
            parts.append(f'<p class="why">no sound: {_e(exc.reason)}</p>')
        if kind == "video" and end is not None:
            parts.append(self.clip(path, lo, min(end, lo + self.o.clip_seconds)))
        return "".join(parts)


def _hit_html(b: _Builder, h: Hit, space: str) -> str:
    path = Path(h.path)
    try:
        media = b.media(path, h.modality, h.start, h.end)
    except (AvsearchError, OSError, ValueError) as exc:
        reason = exc.message if isinstance(exc, AvsearchError) else str(exc)
        b.s.unavailable.append(f"{display_path(path)}: {reason}")
        log.warning("results page: %s cannot be shown: %s", display_path(path), reason)
        media = f'<p class="why">not available: {_e(reason)}</p>'
    conf = "" if h.confidence is None else f"{h.confidence:.2f}"
    meter = (
        ""
        if h.confidence is None
        else f'<meter min="0" max="1" value="{h.confidence:.4f}"></meter>'
    )
    kind = " (fused)" if score_kind(space) == "fused" else ""
    heads = "" if h.heads_cosine is None else f" · heads cosine {h.heads_cosine:.3f}"
    dups = h.duplicates
    dup_html = (
        '<p class="dups">same content: '
        + ", ".join(f"<code>{_e(display_path(d))}</code>" for d in dups)
        + "</p>"
        if dups
        else ""
    )
    return (
        f'<article class="hit" id="hit-{h.rank}">'
        f'<div class="media">{media}</div>'
        f'<div class="info"><h2>#{h.rank} <span class="mod">{_e(h.modality)}</span></h2>'
        f'<p class="path"><a href="{_e(_file_uri(path))}">{_e(display_path(path))}</a></p>'
        f'<p class="time">{_e(_span(h.start, h.end)) or "whole picture"}</p>'
        f'<p class="score">score {h.score:.3f}{_e(kind)}{heads} · confidence {conf or "–"} '
        f"{meter}</p>"
        f"{dup_html}</div></article>"
    )


def _file_uri(path: Path) -> str:
    try:
        return path.absolute().as_uri()
    except ValueError:
        return "#"


STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
header{margin-bottom:1em} h1{font-size:1.3em;margin:0 0 .3em}
.query,.hit{display:flex;gap:1em;background:#fff;border:1px solid #ddd;border-radius:8px;
padding:.8em;margin:.6em 0;align-items:flex-start}
.media{display:flex;flex-direction:column;gap:.4em;min-width:240px;max-width:340px}
.thumb,.spectro{max-width:240px;border-radius:4px;display:block}
video{max-width:320px} audio{width:240px} summary{cursor:pointer;color:#1a55a0}
.info h2{font-size:1.05em;margin:0} .mod{color:#777;font-weight:normal;font-size:.85em}
.path{word-break:break-all;margin:.3em 0} .path a{color:#1a55a0}
.time,.score,.dups{margin:.2em 0;color:#444} meter{width:120px;vertical-align:middle}
.note{background:#fff6d6;border:1px solid #e8d48a;padding:.6em;border-radius:6px}
.why{color:#a33}
"""


def render_page(
    result: QueryResult,
    query_file: Path,
    *,
    start: float | None = None,
    end: float | None = None,
    options: PageOptions | None = None,
    summary: PageSummary | None = None,
) -> str:
    """The page's HTML (see the module docstring)."""
    b = _Builder(options or PageOptions(), summary or PageSummary(Path("-")))
    try:
        q_media = b.media(query_file, result.query_modality, start, end)
    except (AvsearchError, OSError, ValueError) as exc:
        reason = exc.message if isinstance(exc, AvsearchError) else str(exc)
        q_media = f'<p class="why">not available: {_e(reason)}</p>'
    hits = "".join(_hit_html(b, h, result.space) for h in result.results)
    note = f'<p class="note">{_e(result.note)}</p>' if result.note else ""
    title = f"avsearch: {display_path(query_file.name)}"
    span = _span(start if start is not None else (0.0 if end is not None else None), end)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{_e(result.query_modality)} → {_e(result.target)}: "
        f"{len(result.results)} hit(s)</h1>"
        f"<p>model <code>{_e(result.model)}</code> · "
        f"{'one hit per file' if result.grouped else 'raw segments'} · "
        f"{_e(time.strftime('%Y-%m-%d %H:%M'))}</p>"
        f'<p class="space">ranked in the {_e(result.space)} space · score: '
        f"{_e(score_meaning(result.space))}</p></header>"
        f'<section class="query"><div class="media">{q_media}</div>'
        f'<div class="info"><h2>query <span class="mod">{_e(result.query_modality)}</span></h2>'
        f'<p class="path">{_e(display_path(query_file))}</p>'
        f'<p class="time">{_e(span)}</p></div></section>'
        f"{note}<main>{hits}</main></body></html>\n"
    )


def write_page(
    result: QueryResult,
    query_file: Path,
    out: Path,
    *,
    start: float | None = None,
    end: float | None = None,
    options: PageOptions | None = None,
) -> PageSummary:
    """Render the page and write it to ``out`` atomically (UsageError when it cannot)."""
    out = check_output_file(out)
    summary = PageSummary(out)
    text = render_page(
        result, query_file, start=start, end=end, options=options, summary=summary
    ).encode("utf-8")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(text)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(
            f"cannot write the results page {display_path(out)}: {exc.strerror or exc}"
        ) from exc
    summary.bytes = len(text)
    return summary


def open_in_browser(path: Path) -> bool:
    """Open ``path`` in the default browser; False when there is none."""
    import webbrowser

    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    return bool(browser.open(path.absolute().as_uri()))


def default_page_path() -> Path:
    """Where ``--open`` without ``--html`` writes the page."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / f"avsearch-results-{stamp}-{os.getpid()}.html"


__all__ = [
    "PageOptions",
    "PageSummary",
    "check_output_file",
    "default_page_path",
    "open_in_browser",
    "render_page",
    "write_page",
]
