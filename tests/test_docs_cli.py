"""docs/cli.md against the CLI itself: every command has a section, every option and argument of
the command tree is named in its section (and every option a section's table names exists),
every exit code the CLI uses is in the table, and every JSON key the commands print is named."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from avsearch import errors, report
from avsearch.cli import app
from tests.mediagen import write_mp4, write_png, write_wav
from tests.test_report import fake_model  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "cli.md"
runner = CliRunner()


def commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, click command) of every command, the root first (path ())."""

    def walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, cmd
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(sub, (*path, name))

    yield from walk(typer.main.get_command(app), ())


def sections() -> dict[str, str]:
    """``## heading`` -> its text."""
    out: dict[str, str] = {}
    parts = re.split(r"^## (.+)$", DOC.read_text(encoding="utf-8"), flags=re.M)
    for head, body in zip(parts[1::2], parts[2::2], strict=True):
        out[head.strip()] = body
    return out


def section_of(path: tuple[str, ...]) -> str:
    secs = sections()
    if not path:
        return secs["Global options"]
    for head, body in secs.items():
        words = head.replace("|", " ").split()
        if words[:2] == ["avsearch", path[0]] and all(p in words for p in path):
            return body
    raise AssertionError(f"docs/cli.md has no section for `avsearch {' '.join(path)}`")


def names(param: Any) -> list[str]:
    if param.param_type_name == "argument":
        return [param.name.upper()]
    return [*param.opts, *param.secondary_opts]


def table_names(body: str) -> set[str]:
    """The options and arguments a section's table rows name in their first cell
    (``| `--model NAME\\|DIR` |`` names ``--model``; ``| `PATHS...` |`` names ``PATHS``)."""
    out: set[str] = set()
    for line in body.splitlines():
        if line.startswith("| `"):
            cell = re.split(r"(?<!\\)\|", line)[1]
            out |= {m.split()[0].removesuffix("...") for m in re.findall(r"`([^`]+)`", cell)}
    return out


@pytest.mark.parametrize("path", [p for p, _ in commands()], ids=lambda p: " ".join(p) or "root")
def test_every_option_and_argument_is_documented_in_its_section(path: tuple[str, ...]) -> None:
    cmd = dict(commands())[path]
    listed = table_names(section_of(path))
    where = f"avsearch {' '.join(path)}".strip()
    missing = [n for p in cmd.params for n in names(p) if n not in listed]
    assert not missing, f"docs/cli.md, `{where}`: no table row for {missing}"
    known = {n for p in cmd.params for n in names(p)}
    extra = {n for n in listed if n.startswith("-")} - known
    assert not extra, f"docs/cli.md lists options `{where}` does not have: {extra}"


def test_every_command_has_a_section() -> None:
    for path, _ in commands():
        assert section_of(path)


def test_every_exit_code_is_in_the_table() -> None:
    table = sections()["Exit codes"]
    documented = {int(c) for c in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    used = {0, 2}  # success; typer's usage errors
    used |= {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.AvsearchError)
    }
    cli_text = (REPO / "avsearch" / "cli.py").read_text(encoding="utf-8")
    used |= {int(c) for c in re.findall(r"typer\.Exit\((\d+)", cli_text)}
    used |= {int(c) for c in re.findall(r"EXIT_\w+ = (\d+)", cli_text)}
    assert used <= documented, f"exit codes not in docs/cli.md: {used - documented}"


DYNAMIC = {"per_class", "recall_at", "files_by_kind"}  # maps keyed by labels, k, kinds
MODALITY_MAPS = {"vector_indexes"}  # keyed by modality, then documented keys


def json_keys(data: Any, parent: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            if parent in DYNAMIC:
                continue
            if parent not in MODALITY_MAPS:
                out.add(key)
            out |= json_keys(value, key)
    elif isinstance(data, list):
        for item in data:
            out |= json_keys(item, parent)
    return out


def test_every_json_key_the_commands_print_is_documented(
    tmp_path: Path,
    index_env: Path,
    fake_model: object,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(report, "open_in_browser", lambda p: False)
    media = tmp_path / "media"
    write_mp4(media / "one" / "v.mp4", seconds=3.0)
    write_png(media / "one" / "p.png")
    write_png(media / "two" / "q.png", (1, 2, 3))
    write_wav(media / "two" / "s.wav")
    write_wav(media / "one" / "t.wav", freq=900.0)
    clip = str(media / "two" / "s.wav")
    runs = [
        ["embed", str(media)],
        ["query", clip, "--html", str(tmp_path / "p.html"), "--export", str(tmp_path / "x")],
        ["query", clip, "--open"],
        ["query", clip, "--min-confidence", "1"],
        ["index", "stats"],
        ["index", "check"],
        ["index", "repair"],
        ["eval"],
        ["--index", str(tmp_path / "none"), "query", clip],  # an error
    ]
    text = DOC.read_text(encoding="utf-8")
    missing: dict[str, set[str]] = {}
    for args in runs:
        result = runner.invoke(app, ["--json", *args], catch_exceptions=False)
        keys = json_keys(json.loads(result.stdout))
        lost = {k for k in keys if f"`{k}`" not in text}
        if lost:
            missing[" ".join(args[:2])] = lost
    assert not missing, f"JSON keys not named in docs/cli.md: {missing}"


def test_the_check_fails_for_an_undocumented_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = DOC.read_text(encoding="utf-8")
    doc = tmp_path / "cli.md"
    doc.write_text(re.sub(r"^\| `--pad SEC`.*\n", "", text, flags=re.M), encoding="utf-8")
    monkeypatch.setitem(globals(), "DOC", doc)
    with pytest.raises(AssertionError, match="--pad"):
        test_every_option_and_argument_is_documented_in_its_section(("query",))


def test_quickstart_commands_use_existing_commands_and_options() -> None:
    """Every ``avsearch ...`` line of docs/quickstart.md names a real command and only options
    it (or the global level) has."""
    import shlex

    tree = dict(commands())
    global_opts = {n for p in tree[()].params for n in names(p)}
    text = (REPO / "docs" / "quickstart.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [ln for b in blocks for ln in b.splitlines() if ln.startswith("avsearch ")]
    assert len(lines) >= 6
    for line in lines:
        words = shlex.split(line.split("|")[0].split("#")[0])[1:]
        path: tuple[str, ...] = ()
        for w in words:
            if (*path, w) in tree:
                path = (*path, w)
            elif not w.startswith("-"):
                break
        assert path, f"no command in: {line}"
        known = global_opts | {n for p in tree[path].params for n in names(p)}
        flags = {w.split("=")[0] for w in words if w.startswith("-")}
        assert flags <= known, f"{line}: unknown {flags - known}"
