from dataclasses import fields
from pathlib import Path

import pytest

from avsearch import config as c
from avsearch.errors import ConfigError


def test_precedence_defaults_file_flags(tmp_path: Path) -> None:
    (tmp_path / "avsearch.yaml").write_text(
        "index: idx\nembed:\n  workers: 3\n  batch-size: 8\nquery:\n  top: 4\n"
    )
    values = c.load_config_file(tmp_path / "avsearch.yaml")
    embed = c.build(c.EmbedConfig, c.section(values, "embed"), {"workers": None, "batch_size": 2})
    assert embed.workers == 3 and embed.batch_size == 2 and embed.model == "default"
    query = c.build(c.QueryConfig, c.section(values, "query"), {"top": None})
    assert query.top == 4
    train = c.build(c.TrainOptions, c.section(values, "train"), {"epochs": 5})
    assert train.epochs == 5 and train.method == "psd"


def test_sections_hold_exactly_their_command_options() -> None:
    assert set(c.SECTIONS) == {"embed", "query", "train", "eval"}
    assert c.TOP_LEVEL == ("index", "embed", "query", "train", "eval")
    keys = {name: [f.name for f in fields(cls)] for name, cls in c.SECTIONS.items()}
    assert keys["eval"] == ["labels", "plot", "features", "model", "no_bridge"]
    assert {"method", "labeled_ratio", "no_soft", "augment", "views"} <= set(keys["train"])
    assert "resume" not in keys["train"]  # how to run, not what to train


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers: 3\n", "unknown top-level key 'workers'; valid: index, embed, query, train"),
        ("embed: 3\n", "`embed:` must be a mapping"),
        ("index: [1]\n", "index in"),
        ("- a\n", "expected a mapping"),
    ],
)
def test_bad_top_level(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "avsearch.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        c.load_config_file(path)
    assert message in err.value.message and str(path) in err.value.message


def test_unknown_key_names_file_section_and_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "avsearch.yaml"
    path.write_text("query:\n  tpo: 3\n")
    values = c.load_config_file(path)
    with pytest.raises(ConfigError) as err:
        c.section(values, "query")
    assert err.value.message == (
        f"{path}: unknown key 'tpo' in section `query:`; valid keys: model, top, start, end, "
        "target, segments, min_confidence, pad, space, no_bridge"
    )
    assert c.section(values, "embed") == {}  # another section is not checked for it


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        ("embed:\n  workers: two\n", "embed", "embed.workers in {p} must be an integer, got 'two'"),
        ("embed:\n  window: .nan\n", "embed", "embed.window in {p} must be a number"),
        ("query:\n  segments: 1\n", "query", "query.segments in {p} must be true or false"),
        (
            "train:\n  labels: 3\n",
            "train",
            "train.labels in {p} must be a string or a list of strings, got 3",
        ),
        ("train:\n  labeled_ratio: x\n", "train", "train.labeled_ratio in {p} must be a number"),
    ],
)
def test_value_types_are_checked(tmp_path: Path, text: str, name: str, message: str) -> None:
    path = tmp_path / "avsearch.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        c.section(c.load_config_file(path), name)
    assert err.value.message.startswith(message.format(p=path))


def test_value_errors_name_the_flag_or_the_key(tmp_path: Path) -> None:
    path = tmp_path / "avsearch.yaml"
    path.write_text("embed:\n  workers: 0\nquery:\n  start: 3.0\n")
    values = c.load_config_file(path)
    with pytest.raises(ConfigError) as err:
        c.build(c.EmbedConfig, c.section(values, "embed"), {"workers": None})
    assert err.value.message == f"embed.workers in {path} must be at least 1, got 0"
    with pytest.raises(ConfigError) as err:
        c.build(c.EmbedConfig, c.section(values, "embed"), {"workers": -1})
    assert err.value.message == "--workers must be at least 1, got -1"
    with pytest.raises(ConfigError) as err:
        c.build(c.QueryConfig, c.section(values, "query"), {"end": 2.0})
    assert err.value.message == f"--end (2.0) must be after query.start in {path} (3.0)"


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
        (c.EmbedConfig, {"precision": "fp16"}, "--precision must be fp32 or bf16"),
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
