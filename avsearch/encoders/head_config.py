"""The sizes of a projection head, without torch: reading a model's ``config.yaml`` (e.g. for an
``embed`` that has nothing to encode) must not pay for importing it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeadConfig:
    in_dim: int
    out_dim: int = 128
    hidden: int = 512
    dropout: float = 0.1
    # the tower parts the head reads (of a composite tower); () = all of its features. A model
    # whose audio tower is [aisfx, soundnet] for the zero-shot bridge reads aisfx alone in its
    # heads: SoundNet's 2425 dimensions, standardised each, made the heads generalise worse
    parts: tuple[str, ...] = ()
