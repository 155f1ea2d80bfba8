"""The structure docs/architecture.md describes, checked on the code: imports point only downward through the
layers declared in pyproject.toml (import-linter), no qdeploy module reaches itself through imports (counting the
ones inside functions), and a task or a target is named only by tasks/ or targets/."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
grimp = pytest.importorskip("grimp", reason="import-linter is not installed (pip install -e '.[test]')")


def test_layers_contract_is_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(exe), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "1 kept, 0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, n = {}, {}, set(), [], [], 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = n
        n += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = n
                    n += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_through_others():
    g = grimp.build_graph("qdeploy", include_external_packages=False)
    edges = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    assert len(edges) > 80
    assert _cycles(edges) == []


def _literals(folder: Path, names: set[str], skip: Path) -> list[str]:
    """file:line of every string constant in folder's Python files (outside skip) that equals one of names."""
    hits = []
    for f in sorted(folder.rglob("*.py")):
        if skip in f.parents:
            continue
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Constant) and node.value in names:
                hits.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    return hits


def test_targets_are_named_only_in_targets():
    from qdeploy.targets import TARGETS

    src = ROOT / "src" / "qdeploy"
    assert len(TARGETS) >= 3
    assert _literals(src, set(TARGETS), src / "targets") == []
    # the check sees what it looks for: targets/ itself names each one
    assert len(_literals(src / "targets", set(TARGETS), src / "nowhere")) >= len(TARGETS)


def test_tasks_are_named_only_in_tasks():
    """No code outside tasks/ compares with (or defaults to) a task's name: it asks the task (get_task(name).check,
    .gate, .has_classes, ...)."""
    from qdeploy.tasks import TASKS

    src = ROOT / "src" / "qdeploy"
    assert len(TASKS) >= 2
    assert _literals(src, set(TASKS), src / "tasks") == []
    assert len(_literals(src / "tasks", set(TASKS), src / "nowhere")) >= len(TASKS)
