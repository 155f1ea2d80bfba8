from qdeploy.bench import BenchConfig, benchmark_many


def test_bench_structure(fp32_onnx, calib_eval):
    cfg = BenchConfig(runs=20, warmup=2, batch_sizes=(1, 4), min_seconds=0.05)
    res = benchmark_many({"a": fp32_onnx[0], "b": fp32_onnx[0]}, calib_eval[1][:8], cfg)
    for r in res.values():
        assert r.runs == 20 and 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
        assert set(r.throughput) == {1, 4} and all(v > 0 for v in r.throughput.values())
        assert r.size_bytes == fp32_onnx[0].stat().st_size and r.threads >= 1
        assert r.provider == "CPUExecutionProvider" and r.runtime.startswith("onnxruntime")


def test_bench_config_validation():
    import pytest

    from qdeploy.errors import ConfigError

    with pytest.raises(ConfigError):
        BenchConfig(runs=3)
    with pytest.raises(ConfigError):
        BenchConfig(batch_sizes=(0,))
