"""Pieces every command line here shares: one-line argument errors, seed-style booleans, torchrun's world, JSON
configs read with one clear line per failure. Ground floor: imports nothing of bdn but its error type."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bdn.errors import BdnError


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one BdnError line (exit 1), not usage text and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BdnError(message)


def boolean(text: str) -> bool:
    """An argparse type for the seed's `--flag True/False` style (also 1/0, yes/no, on/off)."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def torchrun_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise BdnError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise BdnError(f"RANK {rank} is not within WORLD_SIZE {world}")
    return rank, world, local


def read_json(path: str | Path, what: str = "pipeline config") -> object:
    """A JSON file's content; BdnError naming the file for a missing, unreadable or malformed one."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BdnError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BdnError(f"{path}: cannot read ({error})") from None
    except json.JSONDecodeError as error:
        raise BdnError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
