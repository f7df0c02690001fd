"""docs/security.md's threat tables cannot drift from the tests: every row names the test that covers
it, as `path::test_name` (or a test file, or a TypeScript test file), and each one named exists: the
file, and in it a `def test_name` (names collected from the files' `def test_` lines, not imported,
so this runs without root or any of the suite's dependencies)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECURITY = ROOT / "docs" / "security.md"
TEST_COLUMN = ("test", "tested in")
BY_CONSTRUCTION = "by construction"
_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(test_\w+)\s*\(", re.MULTILINE)
_CODE = re.compile(r"`([^`]+)`")


def threat_rows() -> list[tuple[int, str, str]]:
    """(line number, threat, test cell) of every row of a table whose last column names tests."""
    rows, in_table = [], False
    for number, line in enumerate(SECURITY.read_text().splitlines(), 1):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if not cells:
            in_table = False
        elif cells[0] == "threat":
            in_table = cells[-1] in TEST_COLUMN
        elif in_table and not set(line) <= set("|- "):
            rows.append((number, cells[0], cells[-1]))
    return rows


def defined_tests(path: Path) -> set[str]:
    return set(_DEF.findall(path.read_text()))


def problems_of(cell: str) -> list[str]:
    """What is wrong with the references in one row's test cell."""
    references = _CODE.findall(cell)
    if not references:
        return [] if cell.strip() == BY_CONSTRUCTION else ["names no test"]
    problems = []
    for reference in references:
        path, _, name = reference.partition("::")
        name = name.split("[")[0]  # a parametrized case: test_x[param]
        if "/" not in path:
            problems.append(f"`{reference}`: give the test's file, as path::test_name")
        elif not (ROOT / path).is_file():
            problems.append(f"`{reference}`: no file {path}")
        elif name and name not in defined_tests(ROOT / path):
            problems.append(f"`{reference}`: no test {name} in {path}")
    return problems


def test_the_security_page_has_threat_tables_with_rows():
    assert len(threat_rows()) >= 30


def test_every_threat_row_names_tests_that_exist():
    rows = threat_rows()
    wrong = [f"docs/security.md:{n}: {threat[:60]}: {p}" for n, threat, cell in rows for p in problems_of(cell)]
    assert wrong == [], "\n".join(wrong)


def test_a_drifted_reference_is_caught():
    """The check itself: a renamed test, a missing file, a bare name and an empty cell are each reported."""
    this = "tests/unit/test_threat_table.py"
    assert problems_of(f"`{this}::test_a_drifted_reference_is_caught`") == []
    assert problems_of(f"`{this}::test_that_was_renamed`") == [
        f"`{this}::test_that_was_renamed`: no test test_that_was_renamed in {this}"
    ]
    assert problems_of("`tests/nowhere.py`") == ["`tests/nowhere.py`: no file tests/nowhere.py"]
    assert problems_of("`test_a_drifted_reference_is_caught`")[0].endswith("as path::test_name")
    assert problems_of("nothing") == ["names no test"]
    assert problems_of("by construction") == []
