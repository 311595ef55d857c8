"""Global options typed after the subcommand (``avsearch query clip.wav --json --index DIR``)
are moved before it, where the parser expects them, as people type them either way."""

from __future__ import annotations

from collections.abc import Sequence

GLOBAL_FLAGS = frozenset({"--json", "-q", "--quiet", "-v", "--verbose"})
GLOBAL_WITH_VALUE = frozenset({"--index", "--config"})
COMMANDS = frozenset({"embed", "query", "train", "eval", "index", "models", "doctor"})


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """``argv`` (without the program name) with every global option found after the
    subcommand moved in front of it, order kept; nothing after ``--`` is touched."""
    args = list(argv)
    command_at = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args
        if arg in GLOBAL_WITH_VALUE:
            i += 2
            continue
        if arg in COMMANDS:
            command_at = i
            break
        i += 1
    if command_at is None:
        return args
    head, moved, rest = args[:command_at], [], [args[command_at]]
    i = command_at + 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if arg in GLOBAL_FLAGS or (name in GLOBAL_WITH_VALUE and "=" in arg):
            moved.append(arg)
        elif arg in GLOBAL_WITH_VALUE and i + 1 < len(args):
            moved.extend(args[i : i + 2])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return head + moved + rest
