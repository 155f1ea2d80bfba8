"""Starting or joining a Ray cluster for one piece of work."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ..errors import ConfigError, QDeployError


@dataclass
class RayConfig:
    address: str | None = None    # None: start a local cluster for this run; "auto" or "ray://host:10001": join one
    num_cpus: int | None = None   # local cluster only (None: every core)
    cpus_per_task: float = 1.0    # Ray CPUs one evaluation shard holds ...
    threads: int = 1              # ... and the ONNX Runtime intra-op threads its sessions use
    shard_images: int = 1024      # about this many images per shard, in whole evaluation batches ...
    shard_batches: int | None = None   # ... or exactly this many batches (shards align with the local run's batches)
    max_retries: int = 3          # a shard whose worker dies is re-run this many times
    heartbeat_dir: str | None = None   # workers leave one file per running shard here (name holds shard and pid)

    def __post_init__(self):
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError("--ray-cpus must be >= 1")
        if self.num_cpus is not None and self.address:
            raise ConfigError("--ray-cpus sizes a local cluster; a cluster given by --ray-address has its own CPUs")
        if self.cpus_per_task <= 0 or self.threads < 1 or self.shard_images < 1 or self.max_retries < 0 or \
                (self.shard_batches is not None and self.shard_batches < 1):
            raise ConfigError("Ray: cpus per task > 0, threads >= 1, shard images/batches >= 1, retries >= 0")

    def batches_per_shard(self, batch_size: int) -> int:
        return self.shard_batches or max(1, self.shard_images // batch_size)


def _ray():
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise QDeployError('--ray needs Ray: pip install "qdeploy[ray]"') from exc
    return ray


@contextlib.contextmanager
def ray_cluster(cfg: RayConfig, log=print):
    """Ray, connected for the block: a cluster already connected in this process is used as it is; otherwise a
    local one is started (token authentication on, as Ray 2.59+ does by default) or the given one is joined, and
    the connection is closed after the block."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    kw = {"log_to_driver": False, "include_dashboard": None}
    if cfg.address:
        kw["address"] = cfg.address
    else:
        kw["num_cpus"] = cfg.num_cpus
    try:
        ctx = ray.init(**kw)
    except Exception as exc:  # noqa: BLE001 - Ray's own connection errors, told in one line
        raise QDeployError(f"cannot {'join Ray at ' + cfg.address if cfg.address else 'start a local Ray cluster'}: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; for a remote cluster set "
                           "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (see README)") from None
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        where = cfg.address or "local"
        dash = getattr(ctx, "dashboard_url", None)
        log(f"ray: {where} cluster, {cpus:g} CPUs, {len(ray.nodes())} node(s); dashboard: "
            + (f"http://{dash}" if dash else "not running (pip install 'ray[default]' for it)"))
        yield ray
    finally:
        ray.shutdown()
