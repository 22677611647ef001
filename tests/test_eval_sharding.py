"""Sharded batch metrics on 8 fake CPU devices give the same numbers as on 1 device."""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from m3cvc_jax.eval import sharding
    if sys.argv[2] == "multihost":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        assert sharding.maybe_initialize_distributed() and jax.process_count() == 2
    from m3cvc_jax.nn.lpips import LPIPS, LPIPSConfig
    from m3cvc_jax.weights import assign_params, flat_params

    rng = np.random.default_rng(0)
    # 11 frames: not a multiple of 8 devices x 1 frame, so padding and chunking are exercised.
    a = rng.integers(0, 256, size=(11, 168, 176, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, size=a.shape), 0, 255).astype(np.uint8)
    proj = jnp.asarray(rng.normal(size=(3, 16)), jnp.float32)
    embed = lambda p, x: jnp.mean(x, axis=(1, 2)) @ p + jnp.mean(x**2, axis=(1, 2)) @ p
    # Abstract model + numpy weights: nnx's eager random init costs far more than the test itself.
    lp = nnx.eval_shape(lambda: LPIPS(LPIPSConfig("alex"), rngs=nnx.Rngs(0)))
    shapes = {k: v.shape for k, v in flat_params(lp).items()}
    assign_params(lp, {k: rng.normal(0, 0.05, s).astype(np.float32) for k, s in shapes.items()})
    ms = [sharding.psnr_metric()]
    if sys.argv[2] != "multihost":  # the data placement across hosts is what that run checks: PSNR suffices
        ms += [sharding.ms_ssim_metric(), sharding.lpips_metric(lp), sharding.clip_metric(embed, proj)]
    bm = sharding.BatchMetrics(ms, per_device=1)
    res = bm(a, b)
    assert bm.mesh.devices.size == jax.device_count()
    np.savez(sys.argv[1], devices=jax.device_count(), processes=jax.process_count(), **res)
    """
)


def _env(devices, **extra):
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu", **extra)


def _run(tmp_path, devices):
    out = tmp_path / f"res{devices}.npz"
    subprocess.run([sys.executable, "-c", SCRIPT, str(out), "single"], check=True, env=_env(devices), timeout=600)
    return dict(np.load(out))


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("one"), 1)


def test_eval_sharding_8_devices_equals_1(tmp_path, one_device):
    one, eight = one_device, _run(tmp_path, 8)
    assert int(one["devices"]) == 1 and int(eight["devices"]) == 8
    for name in ("psnr", "ms_ssim", "lpips", "clip_sim"):
        assert one[name].shape == (11,), name
        assert np.all(np.isfinite(one[name])), name
        np.testing.assert_allclose(eight[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.ptp(one["psnr"]) > 0  # per-frame values, not a broadcast scalar


def test_eval_sharding_two_processes_equal_one(tmp_path, one_device):
    """jax.distributed on localhost: 2 processes x 4 CPU devices (gloo collectives), every host gets all values."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    procs = []
    for pid in range(2):
        env = _env(4, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / f"p{pid}.npz"), "multihost"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    for pid in range(2):
        res = dict(np.load(tmp_path / f"p{pid}.npz"))
        assert int(res["processes"]) == 2 and int(res["devices"]) == 8
        for name in ("psnr",):
            np.testing.assert_allclose(res[name], one_device[name], rtol=1e-5, atol=1e-6, err_msg=f"{name} host {pid}")
