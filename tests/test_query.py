import pytest

from avsearch.query import query_modalities


@pytest.mark.parametrize(
    ("kind", "target", "expected"),
    [
        ("audio", None, ("audio", "visual")),
        ("image", None, ("visual", "audio")),
        ("video", None, ("audio", "visual")),
        ("video", "audio", ("visual", "audio")),
        ("video", "visual", ("audio", "visual")),
        ("image", "visual", ("visual", "visual")),
    ],
)
def test_default_target_is_the_other_modality(kind: str, target: str | None, expected) -> None:
    assert query_modalities(kind, target) == expected
