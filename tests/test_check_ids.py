"""The registry is the one place that says what a check means (issue 9).

Outside ``diagnostics/`` no code names a check id in a string, or splits or prefix-matches an
id to guess what it means: it asks ``diagnostics.checks`` (``meta``, ``check_for``, ``ids``, a
class's ``id``). Read from the source's syntax tree, so comments and docstrings may still name
ids for the reader.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from diagnostics.checks import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("agent", "rma")
PREFIXES = ("counter.", "site.", "gateway.", "agent.")
PARSING = {"split", "rsplit", "partition", "rpartition", "startswith", "endswith"}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _looks_like_an_id(text: str) -> bool:
    return text.startswith(PREFIXES) and re.fullmatch(r"[a-z_]+(\.[a-z_]*)+", text) is not None


def _names_a_module(text: str) -> bool:
    """``agent.commands.analyze`` (an import path) is not a check id."""
    path = ROOT.joinpath(*text.rstrip(".").split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(source: str, where: str = "") -> list[str]:
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
            if text in REGISTRY or (_looks_like_an_id(text) and not _names_a_module(text)):
                found.append(f"{where}:{node.lineno}: check id literal {text!r}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in PARSING
            and "check_id" in ast.unparse(node.func.value)
        ):
            found.append(f"{where}:{node.lineno}: parses a check id: {ast.unparse(node)}")
    return found


def test_no_check_id_literal_or_id_parsing_outside_diagnostics() -> None:
    found = []
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            found += violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, "ask diagnostics.checks instead:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        'ok = f.check_id == "counter.offline"',
        'TICKETED = ("counter.", "site.")',
        "kind = finding.check_id.split('.')[1]",
        'if row["check_id"].startswith(("counter.device.",)): pass',
    ],
)
def test_the_rule_catches_what_it_is_for(source: str) -> None:
    assert violations(source)


def test_the_rule_leaves_comments_docstrings_and_lookups_alone() -> None:
    source = '''
def f(finding):
    """About counter.offline and its friends."""
    # "counter.offline" in a comment is fine
    return meta(finding).liveness and finding.check_id == CounterOffline.id
'''
    assert violations(source) == []
