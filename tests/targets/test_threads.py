"""$QDEPLOY_THREADS: the thread count of every runtime session whose caller names none (one thread each when
several processes share the cores, as the test workers do); a bad value is one ConfigError."""
from __future__ import annotations

import pytest

from qdeploy.bundled import bundled_run_dir
from qdeploy.errors import ConfigError
from qdeploy.formats.sessions import cpu_session, default_threads
from qdeploy.targets import open_session


def test_sessions_take_the_environment_thread_count_unless_told(monkeypatch):
    fp32 = bundled_run_dir() / "fp32.onnx"
    monkeypatch.setenv("QDEPLOY_THREADS", "1")
    assert default_threads() == 1
    s = open_session(fp32)
    assert s.threads == 1 and s.info["ort_session"].get_session_options().intra_op_num_threads == 1
    raw = cpu_session(str(fp32))   # the quantizers' and graph tools' sessions too
    assert raw.get_session_options().intra_op_num_threads == 1
    told = open_session(fp32, threads=2)   # a caller's own count wins
    assert told.threads == 2 and told.info["ort_session"].get_session_options().intra_op_num_threads == 2
    monkeypatch.delenv("QDEPLOY_THREADS")
    assert default_threads() is None and cpu_session(str(fp32)).get_session_options().intra_op_num_threads == 0


@pytest.mark.parametrize("bad", ["0", "two", "-1", "1.5"])
def test_a_bad_thread_count_is_one_clear_error(monkeypatch, bad):
    monkeypatch.setenv("QDEPLOY_THREADS", bad)
    with pytest.raises(ConfigError, match="QDEPLOY_THREADS must be a whole number"):
        default_threads()
