"""Typed results: report.json round-trips through RunResult, every recorded fact as its own type; an old layout
or a key the schema does not have asks for a re-run."""
import json
from pathlib import Path

import pytest

from qdeploy.bundled import bundled_run_dir
from qdeploy.errors import ModelFileError
from qdeploy.results import (
    SCHEMA_VERSION,
    Diagnosis,
    KindError,
    NodeError,
    Parity,
    PotScales,
    QatEpoch,
    RunResult,
    SearchSummary,
    TargetPick,
    TensorError,
    VariantFacts,
    VariantResult,
)
from qdeploy.recipes import AutoConfig, NncfConfig, QuantConfig, TorchQuantConfig
from qdeploy.records import RecordError, from_json
from qdeploy.tasks import QuantCheck
from qdeploy.tasks.classification import Paired


def test_round_trip_is_typed():
    res = RunResult.load(bundled_run_dir() / "report.json")
    assert res.schema_version == SCHEMA_VERSION and res.fp32.metrics.top1 > 0.8
    d = res.get("default")
    assert d.measured and d.bench.throughput[1] > 0 and isinstance(next(iter(d.bench.throughput)), int)
    assert RunResult.from_dict(json.loads(json.dumps(res.to_dict()))) == res


def test_old_layout_gives_rerun_message(tmp_path):
    data = json.loads((bundled_run_dir() / "report.json").read_text())
    data.pop("schema_version")
    (tmp_path / "report.json").write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="older qdeploy .*re-run 'qdeploy run'"):
        RunResult.load(tmp_path / "report.json")


def _every_fact() -> RunResult:
    """A run whose variants carry every typed fact a recipe can record (QAT, PoT, parity, auto, a refusal)."""
    check = QuantCheck(agreement=0.97, rel_l2=0.05, max_abs_diff=0.4, n=300, collapsed=False)
    node = NodeError(node="conv1", op="Conv", kind="conv", tensor="t1", output_rel_error=0.3, added_error=0.2)
    kind = KindError(kind="conv", nodes=3, mean_added_error=0.1, max_added_error=0.2)
    search = SearchSummary(metric="top1-drop", met_budget=True, candidates=7, seconds=12.5, budget_pt=1.0,
                           chosen="c3", chosen_target="openvino-cpu", calib_sizes=[64, 256],
                           targets=["ort-cpu", "openvino-cpu"],
                           per_target={"ort-cpu": None, "openvino-cpu": TargetPick(chosen="c3", p50_ms=1.2, drop_pt=0.1)},
                           top_sensitive=[node], top_tensors=[TensorError(tensor="t1", kind="conv", output_rel_error=0.2,
                                                                          flips=0.01)],
                           sensitivity_by_kind=[kind])
    qat = VariantFacts(qat_history=[QatEpoch(epoch=0, note="PTQ starting point", val_top1=0.9),
                                    QatEpoch(epoch=1, train_loss=0.3, images=512, device="cpu", val_top1=0.91)],
                       qat_epoch=1, vs_ptq={"torch": Paired(only_this=5, only_ref=3, diff_pt=0.2, p_value=0.7)},
                       export_parity=Parity(agreement=0.99, rel_l2=0.01, verified_on=256, rule="agreement"),
                       vs_fp32=check)
    variants = [VariantResult(name="fp32", kind="fp32", file="fp32.onnx"),
                VariantResult(name="pt-qat", kind="int8", file="int8_pt-qat.onnx", check=check, facts=qat,
                              config=TorchQuantConfig(name="pt-qat", qat_epochs=1)),
                VariantResult(name="nncf", kind="int8", file="int8_nncf.xml", config=NncfConfig(name="nncf")),
                VariantResult(name="pot", kind="int8", file="int8_pot.onnx",
                              facts=VariantFacts(pot_scales=PotScales(count=40, all_power_of_two=True, min_exp=-9,
                                                                      max_exp=-2))),
                VariantResult(name="auto", kind="int8", file="int8_auto.onnx", facts=VariantFacts(search=search),
                              config=AutoConfig(max_drop_pt=0.5)),
                VariantResult.failed("per-tensor", "int8_per-tensor.onnx", "collapsed",
                                     config=QuantConfig(name="per-tensor", per_channel=False),
                                     check=QuantCheck(agreement=0.4, rel_l2=0.9, max_abs_diff=9.0, n=8, collapsed=True),
                                     facts=VariantFacts(diagnosis=Diagnosis(images=8, by_kind=[kind], worst=[node])))]
    return RunResult(variants=variants, classes=["a", "b"])


def test_every_fact_comes_back_as_its_type():
    res = _every_fact()
    back = RunResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back == res
    qat, auto, refused = back.get("pt-qat"), back.get("auto").facts.search, back.get("per-tensor")
    assert isinstance(qat.facts.qat_history[1], QatEpoch) and isinstance(qat.facts.vs_ptq["torch"], Paired)
    assert isinstance(qat.check, QuantCheck) and isinstance(qat.facts.export_parity, Parity)
    assert auto.per_target["ort-cpu"] is None and isinstance(auto.per_target["openvino-cpu"], TargetPick)
    assert isinstance(auto.top_sensitive[0], NodeError) and isinstance(auto.top_tensors[0], TensorError)
    assert not refused.ok and refused.check.collapsed and isinstance(refused.facts.diagnosis.worst[0], NodeError)
    assert isinstance(back.get("pot").facts.pot_scales, PotScales)
    # each recipe's config comes back as its own config type, told apart by its fields alone
    assert back.get("fp32").config is None and back.get("nncf").config == NncfConfig(name="nncf")
    assert isinstance(qat.config, TorchQuantConfig) and qat.config.qat_epochs == 1
    assert isinstance(back.get("auto").config, AutoConfig) and back.get("auto").config.max_drop_pt == 0.5
    assert isinstance(refused.config, QuantConfig) and refused.config.per_channel is False


def test_a_union_of_records_is_read_by_its_exact_fields_or_refused():
    tp = QuantConfig | TorchQuantConfig | None
    torch_cfg = from_json(tp, {**TorchQuantConfig().__dict__})
    assert type(torch_cfg) is TorchQuantConfig
    with pytest.raises(RecordError, match="fits none of QuantConfig, TorchQuantConfig .*keys colour"):
        from_json(tp, {"colour": "red"})


@pytest.mark.parametrize("where, key", [("facts", "qat_hist"), ("check", "agreemnt"), ("variant", "extra")])
def test_a_key_the_schema_does_not_have_is_one_clear_error(tmp_path, where, key):
    data = _every_fact().to_dict()
    v = data["variants"][1]
    target = v if where == "variant" else v[where]
    target[key] = 1
    (tmp_path / "report.json").write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=f"does not match report schema {SCHEMA_VERSION} .*has no field {key}.*"
                                             "re-run 'qdeploy run'"):
        RunResult.load(tmp_path / "report.json")


def test_the_schema_document_is_the_code():
    """docs/report-schema.md lists every record type and field report.json holds; regenerated, it is unchanged."""
    import runpy

    root = Path(__file__).resolve().parents[1]
    render = runpy.run_path(str(root / "scripts" / "report_schema.py"))["render"]
    doc = (root / "docs" / "report-schema.md").read_text()
    assert doc == render(), "docs/report-schema.md is stale: .venv/bin/python scripts/report_schema.py > docs/report-schema.md"
    for name in ("## VariantFacts", "## SearchSummary", "## QuantCheck", "| `qat_history` | `list[QatEpoch]` |"):
        assert name in doc
