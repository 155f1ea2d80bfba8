"""Work that is embarrassingly parallel, on Ray: sharded evaluation (evaluate.py) and sweeps (sweep.py).

Ray is an optional extra (`qdeploy[ray]`). Local by default (a cluster started for the run and shut down after),
any cluster by address (`auto`, `ray://host:10001`). Latency and throughput are never measured here: timing
in parallel on shared cores is wrong, so benchmarks stay serial on the driver's node.
"""
from .cluster import RayConfig, ray_cluster

__all__ = ["RayConfig", "ray_cluster"]
