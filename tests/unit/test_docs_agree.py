"""The docs say what the code does: every limit, its flag and its policy settings, and every error
reason with its status and exit code are in them, in tables made from the code (docs/tables.py),
which are as that file makes them now."""

from __future__ import annotations

import importlib.util
import os
import re
from types import ModuleType

import pytest

from jupyter_worker.errors import ErrorReason
from jupyter_worker.limits import LIMITS

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DOCS = os.path.join(ROOT, "docs")
SETTINGS = [setting for row in LIMITS for setting in (row.default_setting, row.max_setting) if setting]
# Where each generated table must stand.
PLACES = {
    "configuration.md": ["limit-settings"],
    "rest-api.md": ["limits", "error-reasons"],
    "protocol.md": ["error-reasons"],
}


def read(name: str) -> str:
    with open(os.path.join(DOCS, name)) as f:
        return f.read()


@pytest.fixture(scope="module")
def tables() -> ModuleType:
    """docs/tables.py, a script beside the docs rather than part of the package."""
    spec = importlib.util.spec_from_file_location("docs_tables", os.path.join(DOCS, "tables.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_limit_setting_of_the_policy_is_in_the_configuration_doc(setting):
    assert f"`Policy.{setting}`" in read("configuration.md")


@pytest.mark.parametrize("item", LIMITS, ids=lambda r: r.field)
def test_every_limit_is_in_the_rest_doc_with_its_flag(item):
    text = read("rest-api.md")
    assert f"`{item.field}`" in text and f"`{item.flag}`" in text


@pytest.mark.parametrize("doc", ["protocol.md", "rest-api.md"])
def test_every_error_reason_is_in_the_protocol_and_rest_docs_with_its_status_and_exit_code(doc):
    text = read(doc)
    for reason in ErrorReason:
        assert f"| `{reason.value}` | {reason.http_status} | {reason.exit_code} |" in text, reason.value


def test_every_error_reason_has_its_words(tables):
    assert list(tables.WHEN) == list(ErrorReason)


@pytest.mark.parametrize("doc", sorted(PLACES))
def test_the_docs_tables_are_as_the_code_makes_them(tables, doc):
    found = tables.blocks(read(doc))
    for name in PLACES[doc]:
        assert found[name] == [tables.TABLES[name]()], f"{doc}: table {name} is stale; run python docs/tables.py"


def test_no_doc_holds_a_stale_generated_table(tables):
    for path in tables.doc_paths():
        with open(path) as f:
            text = f.read()
        assert tables.rewrite(text) == text, f"{os.path.basename(path)}: run python docs/tables.py"


def test_the_docs_say_a_missing_limit_gets_the_default_and_values_take_units():
    for doc in ("configuration.md", "rest-api.md"):
        words = " ".join(read(doc).split())
        assert "null or absent" in words and "lowered to the user's maximum" in words, doc
        assert re.search(r'`"?\d+G"?`', words) and re.search(r'`"?\d+m"?`', words), f"{doc}: values with units"
