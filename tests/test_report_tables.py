"""The run's tables from the task's columns: every row has as many cells as the header (a Markdown renderer drops
a table whose delimiter row is short), the reference row says so, and a refused variant's figure sits under the
task's own column, for both tasks."""
import pytest

from qdeploy.bench import BenchResult
from qdeploy.report.tables import markdown_table, targets_table
from qdeploy.results import RunResult, TargetResult, VariantResult
from qdeploy.tasks import ImageMetrics, Metrics, QuantCheck, get_task


def _bench(p50: float) -> BenchResult:
    return BenchResult(name="x", size_bytes=1_000_000, p50_ms=p50, p90_ms=p50, p99_ms=1.2 * p50, mean_ms=p50, runs=10,
                       throughput={1: 1000 / p50, 32: 2000 / p50}, runtime="onnxruntime", provider="CPU")


def _run(task: str) -> RunResult:
    if task == "image-to-image":
        ref, q = ImageMetrics(n=4), ImageMetrics(n=4, psnr_mean=35.2, psnr_min=30.1, ssim_mean=0.97, ssim_min=0.9,
                                                 max_abs_diff=0.2, worst_name="kodim03.png")
        refused = QuantCheck(agreement=None, rel_l2=1.0, max_abs_diff=2.0, n=8, collapsed=True, psnr=12.3, psnr_min=9.0)
    else:
        ref, q = Metrics(n=10, top1=0.9), Metrics(n=10, top1=0.89, agreement=0.97, top5_overlap=0.9, rel_l2=0.05)
        refused = QuantCheck(agreement=0.4, rel_l2=1.0, max_abs_diff=2.0, n=8, collapsed=True)
    on = {"openvino-cpu": TargetResult(target="openvino-cpu", metrics=q, bench=_bench(1.5), runtime="openvino")}
    return RunResult(task=task, classes=[], variants=[
        VariantResult(name="fp32", kind="fp32", file="fp32.onnx", metrics=ref, bench=_bench(5.0)),
        VariantResult(name="default", kind="int8", file="int8_default.onnx", metrics=q, bench=_bench(2.0), on=on),
        VariantResult.failed("bad", "int8_bad.onnx", "collapsed", check=refused)])


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.parametrize("task", ["classification", "image-to-image"])
def test_tables_have_one_cell_per_header_and_refusals_sit_in_the_task_column(task):
    res, t = _run(task), get_task(task)
    for table in (markdown_table(res), targets_table(res)):
        lines = table.splitlines()
        head = _cells(lines[0])
        assert set(_cells(lines[1])) == {"---"}
        assert all(len(_cells(line)) == len(head) for line in lines[1:]), table
    lines = markdown_table(res).splitlines()
    head, rows = _cells(lines[0]), {_cells(line)[0]: _cells(line) for line in lines[2:]}
    column = head.index(t.columns[t.refused_column].head)
    assert rows["bad"][1] == "FAILED, not written"
    assert rows["bad"][column] == ("12.30" if task == "image-to-image" else "40.00") + " (on 8 verification images)"
    assert rows["default"][head.index(t.columns[0].head)] == ("35.20" if task == "image-to-image" else "89.00")
    tl = targets_table(res).splitlines()
    th, trows = _cells(tl[0]), [_cells(line) for line in tl[2:]]
    ov = next(r for r in trows if r[1] == "openvino-cpu")   # throughput at each batch the run timed, per target
    assert ov[th.index("img/s b32")] == format(2000 / 1.5, t.rate_format) and "img/s b1" in th
    if task == "image-to-image":
        assert rows["fp32"][head.index("PSNR dB mean")] == "reference"
    else:
        assert rows["default"][head.index("drop pt")] == "+1.00"


def test_a_row_outside_the_gate_on_one_runtime_is_marked_warned_and_not_recommended():
    """The same INT8 file: within the gate in ONNX Runtime (-1.0 pt), 10 pt down in OpenVINO. Only the OpenVINO row
    is FAILED, in the Targets table's gate column and in the report's warnings; the recommendation is the ORT row."""
    from qdeploy.pipeline import recommend
    from qdeploy.report.build import _sections

    res = _run("classification")
    res.variants[1].on["openvino-cpu"].metrics = Metrics(n=10, top1=0.8, agreement=0.85, top5_overlap=0.9, rel_l2=0.3)
    assert set(res.gate_failures()) == {("default", "openvino-cpu")}
    assert "80.00%" in res.gate_failures()["default", "openvino-cpu"]
    lines = targets_table(res).splitlines()
    head, rows = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    gate = {(r[0], r[1]): r[head.index("gate")] for r in rows}
    assert gate == {("default", "ort-cpu"): "ok", ("default", "openvino-cpu"): "**FAILED**"}
    text = "\n".join(_sections(res))
    assert "**default on openvino-cpu: FAILED the gate**" in text and "default on ort-cpu: FAILED" not in text
    dep = recommend(res.variants, 1.0, get_task("classification"))
    assert (dep.variant, dep.target) == ("default", "ort-cpu")
