from qdeploy.bench import BenchConfig, benchmark_many


def test_bench_structure(fp32_onnx, calib_eval):
    cfg = BenchConfig(runs=20, warmup=2, batch_sizes=(1, 4), max_seconds=0.05)
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


def test_a_throughput_point_runs_until_its_rate_is_stable():
    """A steady batch stops after min_iters once min_seconds passed; a noisy one runs on until max_seconds; the rate
    is what the clock saw (batch x batches / seconds)."""
    import time

    from qdeploy.bench import _throughput, stable

    assert stable([1.0], 0.02) and stable([1.0, 1.0, 1.0], 0.02) and not stable([1.0, 2.0, 1.0, 2.0], 0.02)
    calls = []

    def steady():
        calls.append(1)
        time.sleep(0.01)

    cfg = BenchConfig(min_seconds=0.05, min_iters=3, rel_ci=0.2, max_seconds=5.0)
    t0 = time.perf_counter()
    rate = _throughput(steady, 8, cfg)
    took = time.perf_counter() - t0
    assert took < 1.0 and 4 <= len(calls) <= 30                      # warm-up + a few batches, not 5 s
    assert 0.5 * 8 / 0.01 < rate < 1.05 * 8 / 0.01

    delays = iter([0.001, 0.05] * 1000)
    calls.clear()

    def noisy():
        calls.append(1)
        time.sleep(next(delays))

    t0 = time.perf_counter()
    _throughput(noisy, 1, BenchConfig(min_seconds=0.0, min_iters=3, rel_ci=0.01, max_seconds=0.3))
    assert 0.3 <= time.perf_counter() - t0 < 0.6 and len(calls) > 5   # never stable at 1 %: stopped by max_seconds


def test_default_batches_are_1_and_32_and_evaluations_own_when_smaller():
    from qdeploy.bench import default_batches
    from qdeploy.data import batch_for

    assert default_batches(32) == (1, 32)
    assert default_batches(224) == tuple(sorted({1, batch_for(224), 32})) and batch_for(224) < 32
    assert 32 not in default_batches(512) and 1 in default_batches(512)
