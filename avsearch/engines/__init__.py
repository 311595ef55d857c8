"""Where ``embed`` encodes: in this process (the default, ``local``), or sharded over an existing
distributed engine (``ray``: :mod:`avsearch.engines.ray`).

An engine does not plan and does not write: ``avsearch.pipeline`` plans (mark and sweep) and keeps
the index's writers; the engine gives the two stages the runner (``avsearch.stages.runner``) reads
from: a source of events (as the ``Reader``'s) and the mapper they go through.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Protocol

from avsearch.errors import UsageError

if TYPE_CHECKING:
    from avsearch.config import EmbedConfig
    from avsearch.encoders.model import AVModel
    from avsearch.media.segment import WindowSpec
    from avsearch.stages.reader import Job
    from avsearch.stages.runner import Source, Stage
    from avsearch.store.features import CachedWindow

ENGINES = ("local", "ray")


class Engine(Protocol):
    def stages(
        self,
        jobs: Sequence[Job],
        model: AVModel,
        spec: WindowSpec,
        cfg: EmbedConfig,
        *,
        features: bool,
        cached: Callable[[Job], list[CachedWindow] | None] | None,
        hits: Collection[int],
    ) -> tuple[Source, Stage]:
        """The source and the mapper of ``jobs``: the runner writes what they give.
        ``features``: keep the raw backbone features too; ``hits``: jobs whose windows
        ``cached`` gives from the driver's feature cache."""
        ...


def make_engine(
    name: str, *, address: str | None = None, workers: int | None = None
) -> Engine | None:
    """The engine ``--engine NAME`` asks for; None for ``local`` (``run_embed``'s own stages).
    ``UsageError`` (exit 2) for an unknown name, ``address`` without ``ray``, or ``ray`` when
    Ray is not installed (the message names the install command)."""
    if name not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")
    if name == "local":
        if address is not None:
            raise UsageError("--address applies to --engine ray only")
        return None
    from avsearch.engines.ray import RayEngine, require_ray

    require_ray()
    return RayEngine(address=address, workers=workers)
