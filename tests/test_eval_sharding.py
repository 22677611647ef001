"""Sharded batch metrics on 8 fake CPU devices give the same numbers as on 1 device."""

import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from m3cvc_jax.eval import sharding
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
    ms = [sharding.psnr_metric(), sharding.ms_ssim_metric(), sharding.lpips_metric(lp),
          sharding.clip_metric(embed, proj)]
    bm = sharding.BatchMetrics(ms, per_device=1)
    res = bm(a, b)
    assert bm.mesh.devices.size == jax.device_count()
    np.savez(sys.argv[1], devices=jax.device_count(), **res)
    """
)


def _run(tmp_path, devices):
    out = tmp_path / f"res{devices}.npz"
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True, env=env, timeout=600)
    return dict(np.load(out))


def test_eval_sharding_8_devices_equals_1(tmp_path):
    one, eight = _run(tmp_path, 1), _run(tmp_path, 8)
    assert int(one["devices"]) == 1 and int(eight["devices"]) == 8
    for name in ("psnr", "ms_ssim", "lpips", "clip_sim"):
        assert one[name].shape == (11,), name
        assert np.all(np.isfinite(one[name])), name
        np.testing.assert_allclose(eight[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.ptp(one["psnr"]) > 0  # per-frame values, not a broadcast scalar
