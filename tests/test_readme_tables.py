"""benchmarks/readme_tables.py: README.md's quoted tables match their records, and the marker parser on small files."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "readme_tables.py"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


RECORD = """# A record

Command:

    bdn bench --methods a b

| method | x | y |
|:--|--:|--:|
| a | 1.00 | 2 |
| b | 3.50 | 4 |

## Speed

```text
| not | a table |
```

| method | seconds |
|:--|--:|
| a | 0.1 |

### Memory

| method | MB |
|:--|--:|
| a | 100 |"""


def write(tmp_path: Path, readme: str, record: str = RECORD) -> Path:
    (tmp_path / "records").mkdir(exist_ok=True)
    (tmp_path / "records" / "r.md").write_text(record, encoding="utf-8")
    path = tmp_path / "README.md"
    path.write_text(readme, encoding="utf-8")
    return path


def test_readme_tables_match_their_records(tables):
    readme = ROOT / "README.md"
    quoted, _ = tables.find_markers(readme.read_text(encoding="utf-8").splitlines())
    assert len(quoted) >= 5, "README.md has lost its table markers"
    problems = tables.check(readme)
    assert not problems, "stale or broken README tables (python benchmarks/readme_tables.py):\n" + "\n".join(problems)


def test_selector_by_index(tables, tmp_path):
    readme = write(tmp_path, "Intro\n\n<!-- table: records/r.md #2 -->\n| old |\n\nAfter.\n")
    assert tables.check(readme) == ["README.md:3: records/r.md #2: stale (run python benchmarks/readme_tables.py)"]
    changed, errors = tables.rewrite(readme)
    assert len(changed) == 1 and not errors
    assert readme.read_text() == (
        "Intro\n\n<!-- table: records/r.md #2 -->\n| method | seconds |\n|:--|--:|\n| a | 0.1 |\n\nAfter.\n"
    )
    assert tables.check(readme) == []
    assert tables.rewrite(readme) == ([], [])  # current: nothing written


def test_selector_by_heading(tables, tmp_path):
    readme = write(tmp_path, "<!-- table: records/r.md Memory -->\n")
    tables.rewrite(readme)
    assert readme.read_text() == "<!-- table: records/r.md Memory -->\n| method | MB |\n|:--|--:|\n| a | 100 |\n"
    # The title heading: its first table, which comes before the fenced pseudo-table.
    assert tables.select_table(RECORD, "A record")[0] == "| method | x | y |"
    assert tables.select_table(RECORD, "Speed") == ["| method | seconds |", "|:--|--:|", "| a | 0.1 |"]


def test_columns_keep_a_narrower_view(tables, tmp_path):
    readme = write(tmp_path, "<!-- table: records/r.md #1 columns=method, y -->\n| stale |\ntext\n")
    tables.rewrite(readme)
    assert readme.read_text().splitlines()[1:] == ["| method | y |", "|:--|--:|", "| a | 2 |", "| b | 4 |", "text"]
    assert tables.check(readme) == []


def test_table_at_end_of_file(tables, tmp_path):
    # Record and README both end in a table line with no newline after it.
    readme = write(tmp_path, "Text\n<!-- table: records/r.md #3 -->\n| method | MB |\n|:--|--:|\n| a | 99 |")
    assert len(tables.check(readme)) == 1
    tables.rewrite(readme)
    assert readme.read_text().endswith("<!-- table: records/r.md #3 -->\n| method | MB |\n|:--|--:|\n| a | 100 |")
    assert tables.check(readme) == []


@pytest.mark.parametrize(
    "marker, message",
    [
        ("<!-- table: records/missing.md #1 -->", "record not found: records/missing.md"),
        ("<!-- table: records/r.md #4 -->", "selector '#4' not found: the record has 3 table(s)"),
        ("<!-- table: records/r.md No such heading -->", "selector 'No such heading' not found"),
        ("<!-- table: records/r.md #1 columns=method,z -->", "column 'z' not found"),
        ("<!-- table: records/r.md -->", "marker needs a record path and a selector"),
    ],
)
def test_broken_markers_are_errors(tables, tmp_path, marker, message, capsys):
    readme = write(tmp_path, f"Intro\n{marker}\n| a |\n")
    before = readme.read_text()
    problems = tables.check(readme)
    assert len(problems) == 1 and message in problems[0] and problems[0].startswith("README.md:")
    assert tables.main(["--check", "--readme", str(readme)]) == 1
    assert message in capsys.readouterr().out
    assert tables.main(["--readme", str(readme)]) == 1  # rewriting reports it too, and leaves the file alone
    assert readme.read_text() == before


def test_markers_in_code_fences_are_ignored(tables, tmp_path):
    readme = write(tmp_path, "```\n<!-- table: records/missing.md #1 -->\n| x |\n```\n")
    assert tables.check(readme) == []
    assert tables.main(["--check", "--readme", str(readme)]) == 0
