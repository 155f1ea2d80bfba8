"""KServe v2 / Open Inference Protocol on `qdeploy serve`, driven over real HTTP by Triton's own client."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from test_server import serving

from qdeploy.bundled import bundled_run_dir

pytestmark = pytest.mark.server

http = pytest.importorskip("tritonclient.http", reason="Triton's client is not installed (pip install 'qdeploy[serve]')")


@pytest.fixture(scope="module")
def server():
    with serving("--auth", "ann:secret", "--max-upload-mb", "1") as url:
        yield url


@pytest.fixture(scope="module")
def images(cifar):
    """Four real CIFAR-10 test images, preprocessed the way the bundled run says."""
    from qdeploy.artifacts import read_info
    from qdeploy.data import DataConfig, open_calib_eval

    spec = read_info(bundled_run_dir() / "fp32.onnx").require_preprocess()
    ev = open_calib_eval(DataConfig(root=str(cifar), calib_size=1, eval_limit=4))[1]
    return ev.load(spec)


def _client(url):
    from tritonclient.http.auth import BasicAuth

    c = http.InferenceServerClient(url.removeprefix("http://"))
    c.register_plugin(BasicAuth("ann", "secret"))
    return c


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_round_trip_matches_in_process_ort(server, images, binary):
    from qdeploy.targets import open_session

    c = _client(server)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("default")
    meta = c.get_model_metadata("default")
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}
    for name, file in (("fp32", "fp32.onnx"), ("default", "int8_default.onnx")):
        i = http.InferInput("input", list(images.shape), "FP32")
        i.set_data_from_numpy(images, binary_data=binary)
        outputs = None if binary else [http.InferRequestedOutput("logits", binary_data=False)]
        got = c.infer(name, [i], outputs=outputs).as_numpy("logits")
        want = open_session(bundled_run_dir() / file).run(images)
        assert got.shape == (4, 10) and np.abs(got - want).max() <= 1e-5


def _post(url, body, **kw):
    return httpx.post(url + "/v2/models/default/infer", content=json.dumps(body), auth=("ann", "secret"),
                      timeout=30, **kw)


def _tensor(**over):
    return {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072, **over}


@pytest.mark.parametrize("tensor, reason", [
    (_tensor(name="pixels"), "unknown input 'pixels'"),
    (_tensor(datatype="FP64"), "datatype FP64; the model takes FP32"),
    (_tensor(shape=[1, 3, 16, 16], data=[0.0] * 768), "shape [1, 3, 16, 16]; the model takes [-1, 3, 32, 32]"),
    (_tensor(data=[0.0] * 100), "100 values do not fill shape [1, 3, 32, 32]"),
    (_tensor(data="abc"), "data is not a flat list of FP32 numbers"),
    (_tensor(shape=[0, 3, 32, 32], data=[]), "batch 0 must be 1..64"),
])
def test_bad_tensors_get_400_with_a_reason(server, tensor, reason):
    r = _post(server, {"inputs": [tensor]})
    assert r.status_code == 400 and reason in r.json()["error"], r.text


def test_bad_bodies_get_400_never_500(server):
    r = httpx.post(server + "/v2/models/default/infer", content=b"not json", auth=("ann", "secret"))
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = _post(server, {"outputs": []})
    assert r.status_code == 400 and "'inputs' list" in r.json()["error"]
    big = {"inputs": [_tensor(shape=[64, 3, 32, 32], data=[0.123456789] * (64 * 3072))]}   # > 1 MB of JSON
    r = _post(server, big)
    assert r.status_code == 400 and "exceeds the 1 MB limit" in r.json()["error"]
    r = httpx.post(server + "/v2/models/default/infer", content=b'{"inputs": [{"name": "input"}]}' + b"\0" * 10,
                   headers={"Inference-Header-Content-Length": "999"}, auth=("ann", "secret"))
    assert r.status_code == 400 and "does not fit" in r.json()["error"]
    r = httpx.post(server + "/v2/models/nope/infer", content=b"{}", auth=("ann", "secret"))
    assert r.status_code == 404 and "not served here" in r.text
    r = _post(server, {"inputs": [_tensor()]})      # and the server keeps serving
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 10], r.text


def test_auth_protects_models_and_inference_but_not_health(server):
    assert httpx.get(server + "/v2/health/ready").status_code == 200
    assert httpx.get(server + "/v2/health/live").status_code == 200
    assert httpx.get(server + "/v2/models/default").status_code == 401
    assert httpx.post(server + "/v2/models/default/infer", content=json.dumps({"inputs": [_tensor()]})).status_code == 401
    assert _post(server, {"inputs": [_tensor()]}).status_code == 200


def test_metrics_count_requests_errors_and_inference_per_variant(images):
    """A fresh server, a known mix of requests, then /metrics parsed with prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    with serving("--auth", "ann:secret") as url:
        c = _client(url)
        for _ in range(2):
            i = http.InferInput("input", list(images.shape), "FP32")
            i.set_data_from_numpy(images)
            c.infer("default", [i])
        assert _post(url, {"inputs": [_tensor(datatype="FP64")]}).status_code == 400
        assert httpx.get(url + "/v2/models/default").status_code == 401
        httpx.get(url + "/this/does/not/exist/" + "x" * 50)
        assert httpx.get(url + "/metrics").status_code == 401
        r = httpx.get(url + "/metrics", auth=("ann", "secret"))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(r.text) for s in fam.samples}
    infer = "/v2/models/{name}/infer"
    assert samples[("qdeploy_requests_total", (("route", infer), ("status", "200")))] == 2
    assert samples[("qdeploy_requests_total", (("route", infer), ("status", "400")))] == 1
    assert samples[("qdeploy_errors_total", (("kind", "client"), ("route", infer)))] == 1
    assert samples[("qdeploy_requests_total", (("route", "/v2/models/{name}"), ("status", "401")))] == 1
    # the invalid 400 request never ran the model: two inferences of 'default', none of 'fp32'
    assert samples[("qdeploy_inference_seconds_count", (("route", infer), ("variant", "default")))] == 2
    assert not any(k[0] == "qdeploy_inference_seconds_count" and ("variant", "fp32") in k[1] for k in samples)
    assert ("qdeploy_queue_depth", ()) in samples
    # a path the server does not know is counted as "other", never under its own (client-chosen) name
    assert not any("does/not/exist" in str(k) for k in samples)
