"""keep_freed_memory: freed blocks stay mapped, measured as page faults of the process itself (not the return code)."""
import subprocess
import sys

import pytest

SNIPPET = """
import resource, sys
import numpy as np
if sys.argv[1] == "on":
    from qdeploy.train.heap import keep_freed_memory
    if not keep_freed_memory():
        print("not-glibc")
        sys.exit(0)
def step():   # three 12 MB blocks allocated, touched and freed together, as a training step's tensors are
    a = [np.ones(3 << 20, np.float32) for _ in range(3)]
    return sum(float(x[-1]) for x in a)
step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(mode: str) -> str:
    # its own process each: the thresholds are process-wide, and the test process's allocator stays as it was
    out = subprocess.run([sys.executable, "-c", SNIPPET, mode], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


def test_freed_blocks_are_reused_not_faulted_back():
    on = _faults("on")
    if on == "not-glibc":
        pytest.skip("not glibc: mallopt is unavailable, keep_freed_memory changes nothing here")
    off, on = int(_faults("off")), int(on)
    # the default thresholds hand the blocks back and fault them in again (9,216 pages per step at most)
    assert off > 5_000, off
    assert on < off / 20, (on, off)
