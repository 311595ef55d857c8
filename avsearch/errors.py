"""Typed errors raised by the library; the CLI maps each to a message and an exit code.

Exit codes (DESIGN.md section 2): 0 success, 1 error, 2 usage error, 3 no index or an index
built with another model/schema, 4 finished but some input files could not be read.
"""

from __future__ import annotations

from pathlib import Path


class AvsearchError(Exception):
    """Base class of every error the library raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(AvsearchError):
    """The caller asked for something that cannot be done as asked (bad option, bad value)."""

    exit_code = 2


class ConfigError(UsageError):
    """avsearch.yaml or an option value is invalid."""


class MediaError(AvsearchError):
    """A media file could not be opened or decoded."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class NoAudioError(MediaError):
    """A file (or a video's declared audio track) holds no audio samples at all."""


class UnsupportedMediaError(MediaError):
    """The file's extension or content is not a kind avsearch handles."""


class ImageTooLargeError(MediaError):
    def __init__(self, path: Path | str, pixels: int, limit: int) -> None:
        super().__init__(path, f"image has {pixels:,} pixels, more than the limit of {limit:,}")
        self.pixels = pixels
        self.limit = limit


class ModelError(AvsearchError):
    """A model directory or backbone weights file is missing or invalid."""


class IndexStoreError(AvsearchError):
    """Base of index problems."""


class NoIndexError(IndexStoreError):
    exit_code = 3

    def __init__(self, index_dir: Path) -> None:
        super().__init__(
            f"no avsearch index at {index_dir}",
            hint="run `avsearch embed PATH` first, or pass --index DIR / set AVSEARCH_INDEX",
        )
        self.index_dir = index_dir


class ModelMismatchError(IndexStoreError):
    """The index was built with another model, or with another version of a model of the same
    name (a retrained or upgraded ``default``: ``fingerprints`` = (the index's, the model's))."""

    exit_code = 3

    def __init__(
        self,
        index_dir: Path,
        index_model: str,
        wanted_model: str,
        *,
        ref: str | None = None,
        fingerprints: tuple[str, str] | None = None,
    ) -> None:
        ref = ref or wanted_model  # how the user names the model (a name or a directory)
        rebuild = f"`avsearch embed PATH --model {ref} --rebuild`"
        if index_model == wanted_model and fingerprints is not None:
            built, now = (f[:12] for f in fingerprints)
            message = (
                f"the index at {index_dir} was built with another version of model "
                f"{index_model!r} (fingerprint {built}…; the model is now {now}…), whose vectors "
                "do not compare with its vectors now"
            )
            hint = (
                f"re-encode the index: {rebuild} over its folders (the backbone features in its "
                "feature cache are reused, so no file is decoded again)"
            )
        else:
            message = (
                f"the index at {index_dir} was built with model {index_model!r}, "
                f"not with {wanted_model!r}"
            )
            hint = f"query with `--model {index_model}`, or rebuild the index with {rebuild}"
        super().__init__(message, hint=hint)
        self.index_model = index_model
        self.wanted_model = wanted_model


class SchemaError(IndexStoreError):
    exit_code = 3


class WindowMismatchError(IndexStoreError):
    """The index was cut into windows of another length (or shortest tail) than asked for."""

    exit_code = 3

    def __init__(self, index_dir: Path, index_window: str, wanted: str, seconds: float) -> None:
        super().__init__(
            f"the index at {index_dir} holds windows of {index_window}, not {wanted}; "
            "windows of different lengths are never mixed in one index",
            hint=(
                "embed without --window to add to it with its own windows, or rebuild it with "
                f"`avsearch embed PATH --window {seconds:g} --rebuild`"
            ),
        )
        self.index_window = index_window
        self.wanted = wanted


class EmptyIndexError(IndexStoreError):
    exit_code = 3


class IndexCorruptError(IndexStoreError):
    """A file of the index directory is damaged (unreadable, truncated, or disagreeing with the
    manifest). The message names the file and what is wrong."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(
            message,
            hint=hint
            or "run `avsearch index check` for details and `avsearch index repair` to fix",
        )


class IndexBusyError(IndexStoreError):
    """Another process holds the index's writer lock (another `avsearch embed` is running)."""

    exit_code = 1
