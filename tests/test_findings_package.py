"""The findings package's shape (issue 14): a registry that lists every rule, one finding per problem, and no
import cycle anywhere in auditor/."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import auditor
import auditor.findings
from auditor.findings import KINDS, RULES, find_all, scope_of
from tests.test_findings import CFG, corner_run, of_kind

PACKAGE = Path(auditor.__file__).parent


def test_the_registry_lists_every_rule_module_once():
    declaring = []
    for info in pkgutil.iter_modules(auditor.findings.__path__):
        module = importlib.import_module(f"auditor.findings.{info.name}")
        if hasattr(module, "KIND"):
            declaring.append(module)
    assert sorted(m.__name__ for m in declaring) == sorted(m.__name__ for m in RULES)
    assert len(KINDS) == len(RULES)
    for module in RULES:
        kind = module.KIND
        assert kind.scope in ("run", "class", "pair") and kind.advice.strip()
        assert scope_of(kind.name) == kind.scope
    assert scope_of("a_kind_from_a_newer_version") == "other"


def test_two_rules_at_one_place_give_one_finding_with_both_kinds_of_evidence():
    run, _ = corner_run()  # every dog's map on the corner, off its object: background_reliance and spatial_shortcut
    findings, _ = find_all(*run.arrays(), CFG)
    dog = [f for f in findings if f.classes == ["dog"]]
    assert [f.kind for f in dog] == ["spatial_shortcut"]
    (f,) = dog
    assert "background_reliance.object_score" in f.metrics and "Also background reliance" in f.message
    assert f.severity == "high" and of_kind(findings, "background_reliance") == []


def imports_of(path: Path) -> set[str]:
    """Modules inside auditor/ that a file imports, at the top or inside functions alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.startswith("auditor")}
    return found


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first search meets, as the path that closes it."""
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_cycles_in_finds_a_cycle_and_only_one():
    assert cycles_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles_in({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle_inside_auditor():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how a package exposes them, not a cycle of ideas.
    graph = {name: {m for m in deps if not m.startswith(name + ".")} for name, deps in graph.items()}
    assert cycles_in(graph) == []


def test_the_findings_package_needs_no_torch():
    """Judging a run directory (auditor report, a dashboard) must not pay for torch: the model-side checks live in
    auditor.judge and auditor.place_check, above the package."""
    import subprocess
    import sys

    code = "import sys, auditor.findings, auditor.findings.run; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
