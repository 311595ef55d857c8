"""Weights files: a network built with its weights, its random initialisation skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from avsearch.encoders.files import load_new
from avsearch.errors import ModelError


class _Net(nn.Module):
    def __init__(self, extra: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 4)
        self.bn = nn.BatchNorm1d(3)
        if extra:  # a buffer no state dict holds
            self.register_buffer("table", torch.ones(5), persistent=False)


def test_load_new_gives_the_weights_as_float32_copies() -> None:
    state = {k: v.clone() for k, v in _Net().state_dict().items()}
    state["conv.weight"] = torch.randn(3, 2, 4).half()  # stored at half precision
    net = load_new(_Net, state, Path("w.safetensors"), "test")
    assert net.conv.weight.dtype == torch.float32 and not net.conv.weight.is_meta
    torch.testing.assert_close(net.conv.weight, state["conv.weight"].float())
    assert net.conv.weight.data_ptr() != state["conv.weight"].data_ptr()  # a copy
    assert net.conv.weight.requires_grad  # still a parameter
    assert net.bn.num_batches_tracked.dtype == torch.int64


def test_load_new_names_what_does_not_fit() -> None:
    state = _Net().state_dict()
    with pytest.raises(ModelError, match=r"w\.pth: not test weights: .*conv\.bias"):
        load_new(_Net, {k: v for k, v in state.items() if k != "conv.bias"}, Path("w.pth"), "test")
    bad = {**state, "conv.weight": torch.zeros(3, 2, 5)}
    with pytest.raises(ModelError, match=r"not test weights: .*size mismatch"):
        load_new(_Net, bad, Path("w.pth"), "test")
    with pytest.raises(ModelError, match="no values for table"):
        load_new(lambda: _Net(extra=True), state, Path("w.pth"), "test")
