"""What every command line of bdn shares: one option style, one-line errors, one exit-code rule.

- Options are spelled with dashes (`--num-iter`); the seed's underscore spellings (`--num_iter`) are accepted as
  the same option everywhere, so the seed scripts' command lines work unchanged.
- A bad command line, a bad input or a failed item is one line on stderr, `PROG: error: ...`.
- Exit status: 0 done; 1 a bad command line, bad input or any item that failed; 130 interrupted (Ctrl+C).
- Process-wide settings (torch's thread count, a torchrun process group) are made here, in the command layer,
  never by library functions.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bdn.errors import BdnError

EXIT_DONE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one BdnError line (exit 1), not usage text and exit 2, and
    takes the seed's underscore spelling of any dashed long option."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BdnError(message)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._dashed(args), namespace)

    def _dashed(self, args: list[str]) -> list[str]:
        """`--num_iter 5` -> `--num-iter 5` where the dashed spelling is an option of this parser. Stops at a
        sub-command's name, whose own parser does the same for the rest."""
        known = {text for action in self._actions for text in action.option_strings}
        commands = {
            name
            for action in self._actions
            if isinstance(action, argparse._SubParsersAction)
            for name in action.choices
        }
        out = []
        for index, text in enumerate(args):
            if text in commands or text == "--":
                return out + args[index:]
            name, sep, value = text.partition("=")
            if name.startswith("--") and name not in known and "_" in name:
                dashed = "--" + name[2:].replace("_", "-")
                if dashed in known:
                    text = dashed + sep + value
            out.append(text)
        return out


def boolean(text: str) -> bool:
    """An argparse type for the seed's `--flag True/False` style (also 1/0, yes/no, on/off)."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def named_path(text: str) -> tuple[str, Path]:
    """An argparse type for `NAME=PATH` (a dataset's name and its folder or file, as the benchmarks take them)."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name.strip(), Path(path.strip())


def at_least(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= `least`."""

    def number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
        return value

    return number


whole = at_least(1)  # threads, counts
natural = at_least(0)  # indices, skips


def parse_value(text: str) -> int | float | str:
    """A command-line value as the number it spells, else the string itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_params(pairs: list[str]) -> dict:
    """`--param h=0.1 --param profile=lc` -> {'h': 0.1, 'profile': 'lc'} (numbers become numbers)."""
    params = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise BdnError(f"--param takes NAME=VALUE, got {pair!r}")
        params[key.strip()] = parse_value(text)
    return params


def set_threads(threads: int | None) -> None:
    """torch's CPU thread count for this process (None: torch's own choice)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def one_line(error: BaseException) -> str:
    """The message on one line; for an error re-raised from a DataLoader worker, the original message."""
    text = str(error)
    marker = "BdnError: "
    if "\n" in text and marker in text:
        text = text.rsplit(marker, 1)[1]
    return " ".join(text.split())


def call(run: Callable[[], int], prog: str, interrupted: str = "interrupted") -> int:
    """Run a command's body under the exit-code rule: BdnError -> one line and 1, Ctrl+C -> one line and 130."""
    try:
        return run()
    except BdnError as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED


def print_failures(prog: str, problems: Sequence[str], what: str = "image(s)") -> int:
    """The failed items, one line each on stderr; the exit status (1 if any failed)."""
    if not problems:
        return EXIT_DONE
    print(f"{prog}: {len(problems)} {what} failed:", file=sys.stderr)
    for line in problems:
        print(f"  {line}", file=sys.stderr)
    return EXIT_FAILED
