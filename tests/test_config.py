from pathlib import Path

import pytest

from avsearch import config as c
from avsearch.errors import ConfigError


def test_precedence_defaults_file_flags(tmp_path: Path) -> None:
    (tmp_path / "avsearch.yaml").write_text(
        "workers: 3\nembed:\n  batch_size: 8\nquery:\n  top: 4\n"
    )
    values = c.load_config_file(tmp_path / "avsearch.yaml")
    embed = c.build(c.EmbedConfig, c.section(values, "embed"), {"workers": None, "batch_size": 2})
    assert embed.workers == 3 and embed.batch_size == 2 and embed.model == "default"
    query = c.build(c.QueryConfig, c.section(values, "query"), {"top": None})
    assert query.top == 4


def test_index_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(c.INDEX_ENV, raising=False)
    assert c.resolve_index_dir(None, {}) == tmp_path / ".avsearch"
    assert c.resolve_index_dir(None, {"index": "x"}) == tmp_path / "x"
    monkeypatch.setenv(c.INDEX_ENV, str(tmp_path / "env"))
    assert c.resolve_index_dir(None, {"index": "x"}) == tmp_path / "env"
    assert c.resolve_index_dir(Path("flag"), {}) == tmp_path / "flag"


@pytest.mark.parametrize(
    ("cls", "flags", "match"),
    [
        (c.EmbedConfig, {"window": 0.01}, "--window"),
        (c.EmbedConfig, {"workers": 0}, "--workers"),
        (c.QueryConfig, {"top": 0}, "--top"),
        (c.QueryConfig, {"target": "smell"}, "--target"),
        (c.QueryConfig, {"start": 3.0, "end": 2.0}, "--end"),
    ],
)
def test_invalid_values(cls: type, flags: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        c.build(cls, {}, flags)


def test_bad_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("embed: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        c.load_config_file(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        c.load_config_file(tmp_path / "missing.yaml")
