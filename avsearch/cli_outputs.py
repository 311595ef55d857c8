"""What ``avsearch query`` writes besides its answer: the results page (``--html``, ``--open``)
and the exported clips (``--export DIR``, ``--pad``). The paths are checked before the query
runs (an unwritable one is a usage error, exit 2, before any model loads); the files are written
after it. Kept out of cli.py, which only parses and prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avsearch.config import QueryConfig
from avsearch.errors import UsageError
from avsearch.media.paths import display_path
from avsearch.query import QueryResult


@dataclass
class QueryOutputs:
    html: Path | None = None
    open: bool = False
    export: Path | None = None
    pad_flag: bool = False  # --pad was given (it applies to --export only)

    def check(self) -> None:
        """Make the paths absolute and check they can be written (UsageError when not); refuse
        --pad without --export (an option that does not apply is never ignored)."""
        from avsearch import report

        if self.pad_flag and self.export is None:
            raise UsageError("--pad applies to --export only", hint="add --export DIR")

        if self.open and self.html is None:
            self.html = report.default_page_path()
        if self.html is not None:
            self.html = report.check_output_file(self.html)
        if self.export is not None:
            from avsearch import export

            self.export = export.check_export_dir(self.export)

    def write(self, result: QueryResult, query_file: Path, cfg: QueryConfig) -> OutputReport:
        """Write the page and the clips; what was written, for JSON and for the user."""
        out = OutputReport()
        if self.export is not None:
            from avsearch import export

            exported = export.export_hits(result, self.export, pad=cfg.pad)
            out.json["export"] = exported.to_json()
            out.lines.append(
                f"exported {len(exported.files)} file(s) to {display_path(self.export)}"
                + (f" ({len(exported.failures)} could not be)" if exported.failures else "")
            )
            out.lines.extend(f"  not exported: {f}" for f in exported.failures)
            out.partial = out.partial or bool(exported.failures)
        if self.html is not None:
            from avsearch import report

            page = report.write_page(result, query_file, self.html, start=cfg.start, end=cfg.end)
            out.json["html"] = str(page.path)
            kb = page.bytes / 1024
            out.lines.append(f"results page: {display_path(page.path)} ({kb:.0f} kB)")
            out.lines.extend(f"  not shown: {u}" for u in page.unavailable)
            out.partial = out.partial or bool(page.unavailable)
            if self.open:
                if report.open_in_browser(page.path):
                    out.json["opened"] = True
                else:
                    out.json["opened"] = False
                    out.lines.append("no web browser found here: open the page yourself")
        return out


@dataclass
class OutputReport:
    json: dict[str, Any] = field(default_factory=dict)  # keys added to the --json answer
    lines: list[str] = field(default_factory=list)  # what to tell the user (stderr)
    partial: bool = False  # some hit's file could not be read: exit 4, as embed does
