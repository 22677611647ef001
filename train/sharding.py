"""Data parallelism over every device: a 1-D mesh, batches split on it, everything else replicated."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from m3cvc_jax.errors import ConfigError

DATA_AXIS = "data"


def data_mesh(devices=None) -> jax.sharding.Mesh:
    devices = jax.devices() if devices is None else list(devices)
    # Explicit axis types (the new default) would make every op's sharding a typing matter; we only
    # want the compiler to propagate a batch split.
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the {n} devices")


def put_replicated(tree: Any, mesh) -> Any:
    return jax.device_put(tree, replicated(mesh))


def put_batch(batch: Any, mesh) -> Any:
    """Host numpy batch -> global arrays split along the leading (batch) axis."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x), sharding), batch)
