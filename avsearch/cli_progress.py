"""Progress displays of the CLI: rich bars on stderr, only when stderr is a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class StderrProgress:
    """A transient rich progress display on ``console``; a no-op when it is not a terminal."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.enabled = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.fields[stage]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=True,
        )

    def __enter__(self) -> StderrProgress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()


class EmbedProgress(StderrProgress):
    task: Any = None

    def update(self, event: str, data: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if event == "plan":
            self.task = self.progress.add_task("", total=data["jobs"], stage="embed")
        elif event == "file" and self.task is not None:
            self.progress.update(self.task, advance=1, description=Path(data["path"]).name[-40:])
        elif event == "finalising" and self.task is not None:
            self.progress.update(self.task, description="writing vector indexes")


class TrainProgress(StderrProgress):
    """Bars for feature extraction, the views pass (``discovered`` with ``stage: views``),
    and training; with ``tail_epochs`` (fine-tuning) the heads stage and the tails stage get
    a bar each (a stage starts over at epoch 0)."""

    files: Any = None
    task: Any = None

    def __init__(
        self, console: Console, enabled: bool, epochs: int, tail_epochs: int | None = None
    ) -> None:
        super().__init__(console, enabled)
        self.epochs = epochs
        self.tail_epochs = tail_epochs
        self.last_epoch = -1

    def file(self, event: str, data: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if event == "discovered":
            if self.files is not None:
                self.progress.update(self.files, description="")
            stage = "views" if data.get("stage") == "views" else "features"
            self.files = self.progress.add_task("", total=data["files"], stage=stage)
        elif event == "file" and self.files is not None:
            self.progress.update(self.files, advance=1, description=Path(data["path"]).name)

    def epoch(self, record: Any) -> None:
        if not self.enabled:
            return
        if self.task is None:
            stage = "heads" if self.tail_epochs else "train"
            self.task = self.progress.add_task("", total=self.epochs, stage=stage)
        elif self.tail_epochs and record.epoch <= self.last_epoch:
            self.task = self.progress.add_task("", total=self.tail_epochs, stage="tails")
            self.tail_epochs = None
        self.last_epoch = record.epoch
        val = "" if not record.val else f"val MAP {record.val.get('map', 0):.3f}"
        self.progress.update(
            self.task,
            completed=record.epoch + 1,
            description=f"loss {record.losses.get('total', 0):.3f} {val}",
        )
