"""Keep README.md's numbers tables identical to the benchmark records they quote.

    python benchmarks/readme_tables.py            # rewrite every marked table from its record, print what changed
    python benchmarks/readme_tables.py --check    # change nothing; exit 1 listing stale or broken markers

A quoted table in README.md carries a marker on the line directly above it:

    <!-- table: benchmarks/records/NAME.md SELECTOR -->
    <!-- table: benchmarks/records/NAME.md SELECTOR columns=first header,second header -->

- The record's path is relative to the README's folder (the repository root). A record that cannot be found is an
  error, never skipped.
- SELECTOR picks one markdown table of the record: `#N` is the Nth table in the file (1-based); any other text is a
  heading's text, and picks the first table under the `#`, `##` or `###` heading with exactly that text (before
  the next heading of the same or a higher level).
- `columns=a,b,c` (optional, last, separated from the selector by a space) keeps only the columns whose header cells
  are a, b and c, in that order: the README table is then a narrower view of the record's. Names are compared with
  the cells' surrounding spaces stripped; a name cannot hold a comma. Each kept cell is copied as it is (padding
  included).
- A table is a run of lines starting with `|` (lines inside ``` fences do not count, nor do headings there). The
  README's table ends at the first line after the marker that does not start with `|`; a marker directly followed by
  another line gets its table inserted on the next rewrite.
- Cells are split on `|`, except an escaped `\\|`; the copied lines lose only their trailing whitespace.

Only the standard library: `check(readme)` returns one line per stale or broken marker, `rewrite(readme)` rewrites
the file atomically (a temporary file in the same folder, then os.replace) and returns what it changed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER_START = "<!-- table:"
MARKER = re.compile(r"^<!-- table:\s*(?P<body>.*?)\s*-->\s*$")
HEADING = re.compile(r"^(?P<level>#{1,3})\s+(?P<text>.*?)(?:\s+#+)?\s*$")
CELL_SPLIT = re.compile(r"(?<!\\)\|")


class TableError(Exception):
    """A marker that cannot be resolved: unparsable, record missing, selector or column not found."""


@dataclass(frozen=True)
class Marker:
    line: int  # 0-based index of the marker line in the README
    record: str
    selector: str
    columns: tuple[str, ...] | None
    text: str  # the marker as written, for messages


@dataclass(frozen=True)
class Quoted:
    marker: Marker
    start: int  # first line of the README's table (0-based, the line after the marker)
    end: int  # one past its last line


def _is_fence(line: str) -> bool:
    return line.lstrip().startswith(("```", "~~~"))


def _outside_fences(lines: list[str]):
    """Yield (index, line) for every line outside fenced code blocks."""
    fenced = False
    for i, line in enumerate(lines):
        if _is_fence(line):
            fenced = not fenced
            continue
        if not fenced:
            yield i, line


def parse_marker(line: str, index: int = 0) -> Marker:
    """Parse one marker line; raise TableError when it is malformed."""
    match = MARKER.match(line.strip())
    if not match:
        raise TableError("malformed marker (want '<!-- table: PATH SELECTOR [columns=a,b] -->')")
    body = match["body"]
    columns = None
    found = re.search(r"(?:^|\s)columns=(?P<cols>.*)$", body)
    if found:
        columns = tuple(name.strip() for name in found["cols"].split(","))
        if not all(columns):
            raise TableError(f"empty column name in 'columns={found['cols']}'")
        body = body[: found.start()].strip()
    parts = body.split(None, 1)
    if len(parts) != 2:
        raise TableError("marker needs a record path and a selector ('#N' or a heading's text)")
    return Marker(index, parts[0], parts[1].strip(), columns, line.strip())


def find_markers(lines: list[str]) -> tuple[list[Quoted], list[str]]:
    """The README's marked tables, and one message per marker line that does not parse."""
    quoted, errors = [], []
    for i, line in _outside_fences(lines):
        if not line.startswith(MARKER_START):
            continue
        try:
            marker = parse_marker(line, i)
        except TableError as error:
            errors.append(f"line {i + 1}: {error}: {line.strip()}")
            continue
        end = i + 1
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        quoted.append(Quoted(marker, i + 1, end))
    return quoted, errors


def record_tables(text: str) -> list[tuple[list[tuple[int, str]], list[str]]]:
    """Every table of a record: (the headings above it as (level, text), outermost first; its lines)."""
    tables = []
    headings: list[tuple[int, str]] = []
    current: list[str] | None = None
    lines = text.splitlines()
    previous = -2
    for i, line in _outside_fences(lines):
        if current is not None and (i != previous + 1 or not line.startswith("|")):
            current = None
        previous = i
        heading = HEADING.match(line)
        if heading:
            level = len(heading["level"])
            headings = [h for h in headings if h[0] < level] + [(level, heading["text"])]
            continue
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append((list(headings), current))
            current.append(line.rstrip())
    return tables


def select_table(text: str, selector: str) -> list[str]:
    """The lines of the table SELECTOR picks in a record's text; raise TableError when there is none."""
    tables = record_tables(text)
    if re.fullmatch(r"#\d+", selector):
        n = int(selector[1:])
        if not 1 <= n <= len(tables):
            raise TableError(f"selector '{selector}' not found: the record has {len(tables)} table(s)")
        return tables[n - 1][1]
    for headings, table in tables:
        if any(text == selector for _, text in headings):
            return table
    raise TableError(f"selector '{selector}' not found: no table under a heading with that text")


def split_cells(line: str) -> list[str]:
    """A table row's cells as written (padding kept), without the outer pipes."""
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return CELL_SPLIT.split(inner)


def keep_columns(table: list[str], columns: tuple[str, ...]) -> list[str]:
    """The table narrowed to the named columns, in the order named."""
    header = [cell.strip() for cell in split_cells(table[0])]
    keep = []
    for name in columns:
        if name not in header:
            raise TableError(f"column '{name}' not found (the header holds: {', '.join(header)})")
        keep.append(header.index(name))
    rows = []
    for number, line in enumerate(table, 1):
        cells = split_cells(line)
        if len(cells) <= max(keep):
            raise TableError(f"row {number} of the record's table has {len(cells)} cells, fewer than its header")
        rows.append("|" + "|".join(cells[k] for k in keep) + "|")
    return rows


def expected_table(marker: Marker, root: Path) -> list[str]:
    """The lines the marked table must hold, from its record."""
    path = root / marker.record
    if not path.is_file():
        raise TableError(f"record not found: {marker.record}")
    table = select_table(path.read_text(encoding="utf-8"), marker.selector)
    return keep_columns(table, marker.columns) if marker.columns else table


def _resolve(readme: Path, text: str):
    lines = text.splitlines()
    quoted, errors = find_markers(lines)
    name = readme.name
    errors = [f"{name}:{e}" for e in errors]
    results = []
    for q in quoted:
        where = f"{name}:{q.marker.line + 1}: {q.marker.record} {q.marker.selector}"
        try:
            want = expected_table(q.marker, readme.parent)
        except TableError as error:
            errors.append(f"{where}: {error}")
            continue
        results.append((q, want, where))
    return lines, results, errors


def check(readme: Path = README) -> list[str]:
    """One line per stale or broken marker of README (empty when every marked table matches its record)."""
    lines, results, errors = _resolve(readme, readme.read_text(encoding="utf-8"))
    for q, want, where in results:
        have = [line.rstrip() for line in lines[q.start : q.end]]
        if have != want:
            errors.append(f"{where}: stale (run python benchmarks/readme_tables.py)")
    return sorted(errors, key=_line_number)


def _line_number(message: str) -> int:
    found = re.search(r":(?:line )?(\d+)", message)
    return int(found[1]) if found else 0


def rewrite(readme: Path = README) -> tuple[list[str], list[str]]:
    """Rewrite every marked table of README from its record. Returns (what changed, broken markers)."""
    text = readme.read_text(encoding="utf-8")
    lines, results, errors = _resolve(readme, text)
    changed = []
    # From the bottom up, so the earlier tables' line numbers stay valid.
    for q, want, where in sorted(results, key=lambda r: r[0].start, reverse=True):
        have = [line.rstrip() for line in lines[q.start : q.end]]
        if have != want:
            lines[q.start : q.end] = want
            changed.append(f"{where}: rewrote {len(have)} -> {len(want)} lines")
    if changed:
        new = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
        _atomic_write(readme, new)
    return sorted(changed, key=_line_number), sorted(errors, key=_line_number)


def _atomic_write(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale or broken")
    parser.add_argument("--readme", type=Path, default=README, help="the markdown file (default: README.md)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.readme)
        for line in problems:
            print(line)
        return 1 if problems else 0
    changed, errors = rewrite(args.readme)
    for line in changed:
        print(line)
    for line in errors:
        print(line, file=sys.stderr)
    if not changed and not errors:
        print(f"{args.readme.name}: every marked table is current")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
