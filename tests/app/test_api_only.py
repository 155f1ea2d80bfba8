"""`qdeploy serve --no-page`: the KServe v2 and JSON API in a process where gradio, pandas and torch cannot be
imported (a sitecustomize refuses them: what a `qdeploy[serve-api]` install lacks), answering a real v2 request with
the numbers in-process ORT gives, for a run directory and for a verified bundle."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from test_server import start_server, stop

from qdeploy.bundled import bundled_run_dir

pytestmark = pytest.mark.server

BLOCKER = '''
import importlib.abc, sys
BLOCKED = ("gradio", "pandas", "torch")
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in a serve-api install")
sys.meta_path.insert(0, Refuse())
'''


def test_the_api_alone_needs_no_gradio_pandas_or_torch(tmp_path, monkeypatch, cifar, r18_bundle):
    from qdeploy.artifacts import read_info
    from qdeploy.data import DataConfig, open_calib_eval
    from qdeploy.targets import open_session

    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    proc, url = start_server("--no-page")
    try:
        index = httpx.get(url + "/").json()
        assert index["page"] is None and "/v2/models/{name}/infer" in index["routes"]
        spec = read_info(bundled_run_dir() / "fp32.onnx").require_preprocess()
        x = open_calib_eval(DataConfig(root=str(cifar), calib_size=1, eval_limit=3))[1].load(spec)
        body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        r = httpx.post(url + "/v2/models/default/infer", content=json.dumps(body))
        assert r.status_code == 200, r.text
        got = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(3, 10)
        want = open_session(bundled_run_dir() / "int8_default.onnx").run(x)
        assert np.abs(got - want).max() <= 1e-5
        assert httpx.post(url + "/v2/models/default/infer", content=b"{").status_code == 400
    finally:
        stop(proc)
    proc, url = start_server("--no-page", target=r18_bundle)    # verified first (Triton configs included)
    try:
        assert httpx.get(url + "/v2/models/r18-default/ready").status_code == 200
    finally:
        stop(proc)
    out = proc.stdout.read()
    assert "not installed in a serve-api install" not in out and "Traceback" not in out
    with pytest.raises(RuntimeError, match="gradio is not installed in a serve-api install"):
        start_server()   # the refusal is real: the page needs gradio, which this process cannot import


def test_share_needs_the_page():
    from qdeploy.app.config import ServeConfig
    from qdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="--share publishes the Gradio page"):
        ServeConfig(share=True, page=False)
