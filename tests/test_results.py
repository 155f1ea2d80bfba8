"""Typed results: report.json round-trips through RunResult; an old layout asks for a re-run."""
import json

import pytest

from qdeploy.bundled import bundled_run_dir
from qdeploy.errors import ModelFileError
from qdeploy.results import SCHEMA_VERSION, RunResult


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
