"""The VQ trainer's optional rate term (`vq.rate_weight`, `codec/vq.py` context_rate_bits): the proxy against a
numpy computation, its gradients, what it rewards, and a tiny run with and without it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.vq_pretrain import get_config
from m3cvc_jax.codec import vq
from m3cvc_jax.errors import ConfigError
from tests.train_configs import tiny_run_config
from train import sharding, vq_pretrain


def _numpy_rate(z, codebook, indices, marginal, t):
    d = z.shape[-1]
    total, n = 0.0, 0
    cc = ((codebook[:, None] - codebook[None]) ** 2).sum(-1) / (d * t)
    for b in range(z.shape[0]):
        for r in range(z.shape[1]):
            for c in range(z.shape[2]):
                s = -((z[b, r, c] - codebook) ** 2).sum(-1) / (d * t)
                q = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
                logit = np.log(marginal) - (cc[indices[b, r, c - 1]] if c else 0) - (cc[indices[b, r - 1, c]] if r else 0)
                logp = logit - logit.max() - np.log(np.exp(logit - logit.max()).sum())
                total -= (q * logp).sum() / np.log(2)
                n += 1
    return total / n


def test_context_rate_matches_numpy_and_has_gradients():
    rng = np.random.default_rng(0)
    z, codebook = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(7, 5))
    indices, marginal = rng.integers(0, 7, (2, 3, 4)), rng.uniform(1, 10, 7)
    got = vq.context_rate_bits(jnp.asarray(z), jnp.asarray(codebook), jnp.asarray(indices), jnp.asarray(marginal), 0.7)
    assert np.isclose(float(got), _numpy_rate(z, codebook, indices, marginal, 0.7), rtol=1e-5)
    gz, gc = jax.grad(lambda a, b: vq.context_rate_bits(a, b, jnp.asarray(indices), jnp.asarray(marginal), 0.7),
                      argnums=(0, 1))(jnp.asarray(z, jnp.float32), jnp.asarray(codebook, jnp.float32))
    assert np.all(np.isfinite(gz)) and np.abs(gz).max() > 0 and np.abs(gc).max() > 0


def test_context_rate_rewards_words_near_the_neighbours():
    """A vector on its neighbours' word costs fewer bits than one on a far word."""
    codebook = jnp.asarray([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]])
    indices = jnp.zeros((1, 1, 2), jnp.int32)  # the right position's left neighbour is word 0
    marginal = jnp.ones(3)
    near = jnp.asarray([[[[0.0, 0.0], [0.1, 0.0]]]])
    far = jnp.asarray([[[[0.0, 0.0], [5.0, 5.0]]]])
    assert float(vq.context_rate_bits(near, codebook, indices, marginal, 0.5)) < \
        float(vq.context_rate_bits(far, codebook, indices, marginal, 0.5))


def _setup(tmp_path, **vq_settings):
    c = tiny_run_config(get_config, 64, 32)
    c.data.data_dir = str(tmp_path / "data")
    for k, v in vq_settings.items():
        c.vq[k] = v
    return vq_pretrain.setup(c, str(tmp_path / "run"))


def _steps(s, n):
    state, key = s.state, jax.random.key(0)
    for i in range(n):
        state, metrics = s.step_fn(state, sharding.put_batch(s.batches[i], s.mesh), jax.random.fold_in(key, i))
    return state, metrics


def test_tiny_steps_with_rate_term(tmp_path):
    """A weight of 0 traces the plain step exactly, whatever the temperature (today's training, op for op);
    a positive weight logs `rate_bits` and trains the post-encoder differently."""
    with pytest.raises(ConfigError, match="rate_weight"):
        _setup(tmp_path, rate_weight=float("nan"))
    plain = _setup(tmp_path)
    batch = sharding.put_batch(plain.batches[0], plain.mesh)

    def trace(s):
        return str(jax.make_jaxpr(s.step_fn)(s.state, batch, jax.random.key(0)))

    assert trace(_setup(tmp_path, rate_weight=0.0, rate_temperature=0.01)) == trace(plain)
    rated = _setup(tmp_path, rate_weight=1.0)
    assert trace(rated) != trace(plain)
    plain_state, plain_metrics = _steps(plain, 3)
    rated_state, rated_metrics = _steps(rated, 3)
    assert "rate_bits" not in plain_metrics and np.isfinite(float(rated_metrics["rate_bits"]))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(plain_state["params"]["post_encoder"]),
                               jax.tree.leaves(rated_state["params"]["post_encoder"])))
