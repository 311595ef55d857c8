import numpy as np
import pytest

from avsearch.media.segment import cut_samples, window_count, window_index, windows


@pytest.mark.parametrize(
    ("duration", "expected"),
    [(0.0, 0), (0.1, 1), (2.0, 1), (2.3, 1), (4.6, 2), (4.7, 2), (5.2, 3), (5.0, 2)],
)
def test_window_count(duration: float, expected: int) -> None:
    # w = 2.3, min_tail 0.5: a tail under half a second is dropped unless it is the only window
    assert window_count(duration, 2.3, 0.5) == expected


def test_windows_are_fixed_and_clip_the_last_end() -> None:
    ws = windows(5.2, 2.3, 0.5)
    assert [(w.start, w.end) for w in ws] == [(0.0, 2.3), (2.3, 4.6), (4.6, 5.2)]
    assert ws[1].centre == pytest.approx(3.45)


def test_window_index() -> None:
    assert window_index(0.0, 2.0) == 0
    assert window_index(1.999, 2.0) == 0
    assert window_index(2.0, 2.0) == 1


def test_cut_samples_pads_last_row() -> None:
    x = np.arange(10, dtype=np.float32)
    out = cut_samples(x, 10, 4)
    assert out.shape == (3, 4)
    assert out[2].tolist() == [8, 9, 0, 0]
    assert cut_samples(np.zeros(0, np.float32), 10, 4).shape == (1, 4)
