"""`qdeploy sweep`: a 2-model x 2-variant sweep (the bundled ResNet-20 calibrated two ways, so the cells are cheap,
plus a model whose checkpoint is missing) on a real local Ray cluster writes the leaderboard; re-running resumes
(finished cells untouched, changed inputs re-run) on the local backend; a collapsed variant is FAILED with its
reason; bad sweep files get one line."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import CIFAR, R20_CKPT, run_cli

pytest.importorskip("ray", reason="Ray is not installed (pip install 'qdeploy[ray]')")
R20 = R20_CKPT
VARIANTS = ["default", "dynamic"]   # two recipes: the sweep logic, not the recipes, is under test here


def _write(path, r20_limit=150):
    path.write_text(f"""
out: {path.parent / 'out'}
max_drop: 1.0
defaults: {{eval_limit: 150, calib_size: 50, bench_runs: 20, bench_batches: "1", bench_seconds: 0.05, data: {CIFAR}}}
models:
  r20c50: {{checkpoint: {R20}}}
  r20: {{checkpoint: {R20}, calib_size: 30, eval_limit: {r20_limit}}}
  ghost: {{checkpoint: missing/nothing.pth}}
variants: [{', '.join(VARIANTS)}]
""")
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    yaml = _write(tmp_path_factory.mktemp("sweep") / "zoo.yaml")
    r = run_cli("sweep", yaml, "--backend", "ray", "--ray-cpus", "2", timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return yaml, r


@pytest.mark.ray
@pytest.mark.pipeline
@pytest.mark.shared
def test_ray_sweep_writes_the_leaderboard(swept):
    yaml, r = swept
    out = yaml.parent / "out"
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["backend"] == "ray" and board["cells"] == 6 and board["failed"] == 2
    assert "ray: local cluster, 2 CPUs" in r.stderr
    for model in ("r20c50", "r20"):
        cells = board["models"][model]["cells"]
        assert sorted(c["variant"] for c in cells) == sorted(VARIANTS)
        assert all(c["status"] == "ok" and c["p50_ms"] > 0 and 0 < c["size_bytes"] for c in cells)
        # every figure is the cell's own report's, and the cell's benchmark had the machine to itself
        for c in cells:
            rep = json.loads((out / "cells" / c["cell"] / "run" / "report.json").read_text())
            v = next(v for v in rep["variants"] if v["name"] == c["variant"])
            assert v["metrics"]["top1"] == c["top1"] and v["bench"]["p50_ms"] == c["p50_ms"]
            assert c["bench"]["exclusive"] is True
        best = board["models"][model]["best"]
        within = [c for c in cells if c["drop_pt"] <= 1.0]
        assert best == min(within, key=lambda c: c["p50_ms"])["cell"]
    ghost = board["models"]["ghost"]
    assert ghost["best"] is None and all(c["status"] == "FAILED" and "not found" in c["reason"] for c in ghost["cells"])
    md = (out / "leaderboard.md").read_text()
    assert "## r20c50: best r20c50__" in md and "cells/r20c50__default__ort-cpu/run/report.html" in md and "FAILED" in md
    assert (out / "cells" / "r20c50__default__ort-cpu" / "run" / "report.html").is_file()
    assert "<table>" in (out / "leaderboard.html").read_text()
    assert not list((out / "cells").glob(".*partial*"))      # no half-written cell left behind


@pytest.mark.ray
@pytest.mark.pipeline
@pytest.mark.shared
def test_rerun_resumes_and_redoes_only_changed_cells(swept):
    yaml, _ = swept
    out = yaml.parent / "out"
    stamp = {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*/cell.json")}
    r = run_cli("sweep", yaml, "--backend", "local", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "4 finished before (same inputs), 2 to run on local" in r.stderr        # only the failed ghost cells
    now = {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*/cell.json")}
    assert all(now[k] == stamp[k] for k in stamp if not k.startswith("ghost"))
    _write(yaml, r20_limit=100)                                                   # r20's inputs change
    r = run_cli("sweep", yaml, "--backend", "local", timeout=900)
    assert r.returncode == 0 and "2 finished before (same inputs), 4 to run on local" in r.stderr, r.stderr[-2000:]
    board = json.loads((out / "leaderboard.json").read_text())
    r20 = {c["cell"]: c for c in board["models"]["r20"]["cells"]}
    assert all(not c.get("resumed") for c in r20.values())
    assert all(json.loads((out / "cells" / k / "run" / "report.json").read_text())["variants"][0]["metrics"]["n"] == 100
               for k in r20)
    assert all(c.get("resumed") for c in board["models"]["r20c50"]["cells"])


def test_a_collapsed_variant_is_a_failed_cell_with_its_reason(small_run, tmp_path):
    from qdeploy.distributed.sweep import Cell, summarize

    run, _ = small_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    rep = json.loads((copy / "report.json").read_text())
    for v in rep["variants"]:
        if v["name"] == "dynamic":
            v.update(status="failed", error="collapsed: agreement with FP32 10.6 % (below 50 %)")
    (copy / "report.json").write_text(json.dumps(rep))
    rec = summarize(copy, Cell("r18", "dynamic", "ort-cpu", {}))
    assert rec == {"status": "FAILED", "reason": "variant dynamic: collapsed: agreement with FP32 10.6 % (below 50 %)"}
    assert summarize(copy, Cell("r18", "default", "ort-cpu", {}))["status"] == "ok"


@pytest.mark.parametrize("text, fragment", [
    ("models: [1, 2", "is not valid YAML"),
    ("models: {a: {checkpoint: x}}\nvariants: [default]\ncolour: red", "unknown key(s) colour"),
    ("models: {a: {out: x}}\nvariants: [default]", "out is set by the sweep itself"),
    ("variants: [default]", "a sweep needs `models:`"),
])
def test_bad_sweep_files_get_one_line(tmp_path, text, fragment):
    f = tmp_path / "s.yaml"
    f.write_text(text)
    r = run_cli("sweep", f)
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
