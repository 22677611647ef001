"""CMVC IT2V functions: interpolation maths against numpy, determinism of the LoRAs, the w optimisation."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3cvc_jax.diffusion import morph
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn import lora
from m3cvc_jax.nn.unet import PLAIN_DOWN, PLAIN_UP, UNet2DConditionModel, UNetConfig
from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig
from m3cvc_jax.pipelines import it2v, it2v_clips
from m3cvc_jax.random_weights import random_module

# Far smaller than the `tiny` preset: these tests are compile-bound (XLA's compile time grows with the
# graph, not the arrays). One UNet level whose only transformer is the mid block's (8 LoRA'd projections),
# a one-level VAE; every program is compiled once in the module fixture and shared by the tests.
UNET = UNetConfig(block_out_channels=(16,), layers_per_block=1, down_block_types=(PLAIN_DOWN,),
                  up_block_types=(PLAIN_UP,), cross_attention_dim=8, num_attention_heads=1, norm_num_groups=4)
VAE = VAEConfig(block_out_channels=(8,), layers_per_block=1, norm_num_groups=4)
# lr 5e-2 (not 2e-4) so that 60 steps move the LoRAs far enough for eq. 4's loss and w_l to show.
CFG = it2v.IT2VConfig(lora_rank=4, lora_steps=60, lora_lr=5e-2, sampling_steps=3, opt_steps=40, opt_lr=0.05)
H, W = 8, 12


# ------------------------------------------------------------------------------------------- maths


def np_stats(x):
    flat = x.reshape(x.shape[0], -1, x.shape[-1]).astype(np.float64)
    return flat.mean(1)[:, None, None], np.sqrt(flat.var(1, ddof=1) + 1e-5)[:, None, None]


def np_morph(x0, x1, w):
    """DiffMorpher's slerp(p0, p1, alpha, adain=True) in float64 with alpha = 1 - w (w weights x0)."""
    a, b = x0.astype(np.float64), x1.astype(np.float64)
    alpha = 1 - w
    m0, s0 = np_stats(a)
    m1, s1 = np_stats(b)
    dot = np.clip(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)), -1 + 1e-7, 1 - 1e-7)
    th = np.arccos(dot)
    out = a * np.sin(th - th * alpha) / np.sin(th) + b * np.sin(th * alpha) / np.sin(th)
    slerped = out
    flat = out.reshape(out.shape[0], -1, out.shape[-1])
    mu, var = flat.mean(1)[:, None, None], flat.var(1)[:, None, None]
    normed = (out - mu) / np.sqrt(var + 1e-5)
    return slerped, normed * ((1 - alpha) * s0 + alpha * s1) + (1 - alpha) * m0 + alpha * m1


def test_interpolation_maths_against_numpy():
    rng = np.random.default_rng(0)
    x0, x1 = rng.normal(size=(2, 2, 4, 6, 4)).astype(np.float32)
    x1 = 0.5 * x1 + 0.3  # other statistics, so AdaIN has work to do
    for w in (0.0, 0.3, 0.5, 1.0):
        np.testing.assert_allclose(morph.lerp(jnp.asarray(x0), jnp.asarray(x1), w), w * x0 + (1 - w) * x1,
                                   rtol=1e-6, atol=1e-6)  # eq. 5
        want_slerp, want_morph = np_morph(x0, x1, w)
        np.testing.assert_allclose(morph.slerp(jnp.asarray(x0), jnp.asarray(x1), w), want_slerp, atol=1e-5)
        np.testing.assert_allclose(morph.morph(jnp.asarray(x0), jnp.asarray(x1), w), want_morph, atol=1e-4)
    np.testing.assert_allclose(morph.slerp(jnp.asarray(x0), jnp.asarray(x1), 1.0), x0, atol=1e-5)
    # slerp keeps the norm of equal-norm endpoints; lerp shrinks it (why DiffMorpher uses it on noise).
    y1 = x1 / np.linalg.norm(x1) * np.linalg.norm(x0)
    half = morph.slerp(jnp.asarray(x0), jnp.asarray(y1), 0.5)
    assert abs(float(jnp.linalg.norm(half)) / np.linalg.norm(x0) - 1) < 1e-4
    assert float(jnp.linalg.norm(morph.lerp(jnp.asarray(x0), jnp.asarray(y1), 0.5))) < 0.8 * np.linalg.norm(x0)
    m, s = morph.channel_stats(jnp.asarray(x0))
    wm, ws = np_stats(x0)
    np.testing.assert_allclose(m, wm, atol=1e-6)
    np.testing.assert_allclose(s, ws, atol=1e-5)
    with pytest.raises(ConfigError):
        morph.interpolate_latents("cubic", x0, x1, 0.5)


def test_lora_interpolation_eq6_against_numpy():
    rng = np.random.default_rng(1)
    s0 = {"a.lora_A.kernel": rng.normal(size=(6, 4)), "a.lora_B.kernel": rng.normal(size=(4, 5))}
    s1 = {k: rng.normal(size=v.shape) for k, v in s0.items()}
    s0 = {k: jnp.asarray(v, jnp.float32) for k, v in s0.items()}
    s1 = {k: jnp.asarray(v, jnp.float32) for k, v in s1.items()}
    for w in (0.0, 0.25, 1.0):
        got = lora.interpolate(s0, s1, w)
        for k in s0:  # A and B each mixed, not the product A·B
            np.testing.assert_allclose(got[k], w * np.asarray(s0[k]) + (1 - w) * np.asarray(s1[k]), rtol=1e-6, atol=1e-6)
    # differentiable in w: d/dw of the mixed A is A0 - A1
    g = jax.grad(lambda w: jnp.sum(lora.interpolate(s0, s1, w)["a.lora_A.kernel"]))(0.4)
    np.testing.assert_allclose(g, float(jnp.sum(s0["a.lora_A.kernel"] - s1["a.lora_A.kernel"])), rtol=1e-5)


def test_weight_quantisation():
    w = jnp.asarray([0.0, 0.1234, 0.5, 0.99, 1.0, 1.3, -0.2])
    for bits in (2, 4, 8):
        codes = it2v.quantize_weights(w, bits)
        assert int(codes.min()) >= 0 and int(codes.max()) == (1 << bits) - 1
        back = it2v.dequantize_weights(codes, bits)
        err = np.abs(np.asarray(back) - np.clip(np.asarray(w), 0, 1))
        assert err.max() <= 0.5 / ((1 << bits) - 1) + 1e-7
    with pytest.raises(ConfigError):
        it2v.quantize_weights(w, 0)
    for bad in (dict(lora_rank=0), dict(opt_lr=float("nan")), dict(interpolation="cubic"), dict(w_bits=17),
                dict(lora_steps=1.5)):
        with pytest.raises(ConfigError):
            it2v.IT2VConfig(**bad)


# ------------------------------------------------------------------------------------------- models


# Rows of the shared frame batch: (lora0, lora1, x_T0, x_T1) = keyframe 0 and 1 unless "alone" (0 and 0).
WS = np.asarray([[0.3, 0.6], [1.0, 1.0], [0.5, 0.5], [0.0, 1.0], [0.8, 0.35], [0.25, 0.7]], np.float32)
ALONE = np.asarray([False, False, True, False, False, False])
TRUE_W = WS[4:]


@pytest.fixture(scope="module")
def setup():
    """Everything through the codec's own compiled programs (`IT2VClips` and `it2v_clips`' jitted functions),
    so that the tests below and the pipeline share one compile each (these tests are compile-bound)."""
    base = random_module(lambda r: UNet2DConditionModel(UNET, rngs=r), 0, "unet")
    vae = random_module(lambda r: AutoencoderKL(VAE, rngs=r), 0, "vae")
    clips = it2v_clips.IT2VClips(base, vae, CFG)
    assert not lora.lora_layers(base) and lora.lora_layers(clips.unet)  # the codec's own UNet is untouched
    rng = np.random.default_rng(0)
    keyframes = jnp.asarray(rng.uniform(-1, 1, (2, H, W, 3)), jnp.float32)
    text = jnp.asarray(rng.normal(size=(1, 5, 8)), jnp.float32)
    key = jax.random.key(0)
    ends = clips.endpoints(keyframes[0], keyframes[1], text[0], key)
    k0, _ = jax.random.split(key)  # endpoints' key for keyframe 0's LoRA
    unet, sched = clips.unet, clips.scheduler
    latents = it2v_clips._latents(vae, keyframes)

    @jax.jit
    def frames(ws, x_a, x_b, alone):
        """The unclipped frame (`render`) per row, vmapped over weights and endpoints (LoRA 0 twice where
        `alone`). One render chain for both interpolations: a row's x_T endpoints are given, so a
        diffmorpher row passes its morphed x_T twice with w_i = 1 (lerp(x, x, 1) is x exactly)."""
        def one(w, a, b, solo):
            l1 = jax.tree.map(lambda p, q: jnp.where(solo, p, q), ends.lora0, ends.lora1)
            return it2v.render(unet, vae, ends.lora0, l1, a, b, w[0], w[1], ends.text, sched)[0]
        return jax.vmap(one)(ws, x_a, x_b, alone)

    def rows(ws, interpolation="linear"):
        ws, alone = jnp.asarray(ws), jnp.asarray(ALONE)
        x1 = jnp.where(alone[:, None, None, None, None], ends.x0, ends.x1)
        if interpolation == "linear":
            return frames(ws, jnp.broadcast_to(ends.x0, x1.shape), x1, alone)
        x_t = jax.vmap(lambda w, b: morph.interpolate_latents(interpolation, ends.x0, b, w))(ws[:, 0], x1)
        return frames(ws.at[:, 0].set(1.0), x_t, x_t, alone)

    return dict(clips=clips, unet=unet, vae=vae, text=ends.text, latents=latents, ends=ends, k0=k0,
                sched=sched, rows=rows, linear=rows(WS), dm=rows(WS, "diffmorpher"),
                single=clips.frames(ends, WS[:1]))


def test_train_lora_deterministic_from_key(setup):
    """Encoder and decoder train on the same decoded keyframe with the same key: bit-identical LoRAs."""
    d = setup
    cfg = d["clips"].lora_config  # CFG with the encoder-only w-search fields at their defaults
    assert cfg == dataclasses.replace(CFG, opt_steps=it2v.IT2VConfig().opt_steps, opt_lr=it2v.IT2VConfig().opt_lr)
    train = it2v_clips._train
    a, losses = train(d["unet"], d["latents"][:1], d["text"], d["k0"], cfg)
    assert losses.shape == (CFG.lora_steps,) and np.all(np.isfinite(losses))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(d["ends"].lora0)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(train(d["unet"], d["latents"][:1], d["text"], d["k0"], cfg)[1], losses)
    fresh = lora.initial_state(d["unet"], jax.random.split(d["k0"])[0])
    flat, flat0 = lora.flat_lora(it2v.with_lora(d["unet"], a)), lora.flat_lora(it2v.with_lora(d["unet"], fresh))
    # B starts at zero and weight decay keeps zero at zero: only gradients of eq. 4 can have moved it.
    assert all(not np.any(flat0[k]) for k in flat0 if "lora_B" in k)
    assert max(float(jnp.abs(flat[k]).max()) for k in flat if "lora_B" in k) > 0
    c, _ = train(d["unet"], d["latents"][:1], d["text"], jax.random.key(7), cfg)
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))


def test_train_lora_lowers_the_eps_loss(setup):
    """Training fits the keyframe: the eq. 4 loss on 32 fixed (t, eps) draws goes down."""
    from m3cvc_jax.diffusion import predictions
    from m3cvc_jax.diffusion.schedules import NoiseSchedule

    d = setup
    levels = NoiseSchedule.stable_diffusion().level()
    z = jnp.broadcast_to(d["latents"][:1], (32, *d["latents"].shape[1:]))
    t = jax.random.randint(jax.random.key(11), (32,), 0, 1000)
    eps = jax.random.normal(jax.random.key(12), z.shape)

    @jax.jit
    def eq4(states):
        def one(state):
            model = it2v.with_lora(d["unet"], state)
            pred = it2v.unet_eps(model, predictions.add_noise(z, eps, levels[t]), t,
                                 (jnp.repeat(d["text"], 32, 0), None))
            return jnp.mean(jnp.square(pred - eps))
        return jax.lax.map(one, states)

    fresh = lora.initial_state(d["unet"], jax.random.split(d["k0"])[0])
    before, after = map(float, eq4(jax.tree.map(lambda a, b: jnp.stack([a, b]), fresh, d["ends"].lora0)))
    assert after < 0.9 * before, (before, after)


def test_interpolate_frame_endpoints_jit_and_vmap(setup):
    d = setup
    lin, dm = np.asarray(d["linear"]), np.asarray(d["dm"])
    assert lin.shape == (len(WS), H, W, 3) and np.all(np.isfinite(lin))
    # vmap over frames (and endpoints) == single calls; interpolate_frame (the codec's compiled
    # `IT2VClips.frames`) is the clipped render
    assert d["single"].shape == (1, H, W, 3) and float(jnp.abs(d["single"]).max()) <= 1.0
    np.testing.assert_allclose(np.clip(lin[0], -1, 1), d["single"][0], atol=1e-5)
    # w = 1 is keyframe 0's own chain: x_T0 sampled with LoRA 0 alone
    np.testing.assert_allclose(lin[1], lin[2], atol=1e-5)
    assert np.abs(lin[3] - lin[1]).max() > 1e-3  # w_i moves the frame
    assert np.abs(lin[0] - lin[1]).max() > 1e-3
    # diffmorpher (slerp + AdaIN) is another frame in between
    assert dm.shape == lin.shape and np.all(np.isfinite(dm))
    assert not np.allclose(dm[0], lin[0], atol=1e-3)


def test_interpolation_setting_reaches_the_latent_mix(setup, monkeypatch):
    """render / interpolate_frame / optimise_weights pass their interpolation to eq. 5's latent mix (traced
    only: the numbers of each mix are tested against numpy above, the frames of both in the test above)."""
    d, e = setup, setup["ends"]
    seen = []
    real = morph.interpolate_latents
    monkeypatch.setattr(morph, "interpolate_latents", lambda m, *a: seen.append(m) or real(m, *a))
    for method in ("linear", "diffmorpher"):
        jax.eval_shape(lambda w: it2v.interpolate_frame(d["unet"], d["vae"], e.lora0, e.lora1, e.x0, e.x1, w, w,
                                                        e.text, d["sched"], interpolation=method), 0.5)
        assert seen and set(seen) == {method}, seen
        seen.clear()
    cfg = dataclasses.replace(CFG, interpolation="diffmorpher")
    jax.eval_shape(lambda f: it2v.optimise_weights(d["unet"], d["vae"], e.lora0, e.lora1, e.x0, e.x1, e.text, f,
                                                   it2v.position_weights(1), d["sched"], cfg), d["single"])
    assert seen and set(seen) == {"diffmorpher"}, seen


def test_optimise_weights_recovers_a_known_w(setup, monkeypatch):
    """A synthetic clip made by the interpolator itself: optimisation from uniform w lowers the L2 error
    and lands near the w that made it. Run as the encoder runs it (`IT2VClips.search`, one frame per
    call of the compiled `optimise_weights`, whose losses are recorded on the way)."""
    d, e = setup, setup["ends"]
    frames = d["linear"][4:]  # unclipped, as the render the loss of eqs. 7-8 compares
    start = np.asarray(it2v.position_weights(2))  # (2/3, 1/3): the uniform-w ablation
    calls = []
    real = it2v_clips._optimise
    monkeypatch.setattr(it2v_clips, "_optimise", lambda *a, **k: calls.append((a, real(*a, **k))) or calls[-1][1])
    w = d["clips"].search(e, frames)
    np.testing.assert_allclose(w, TRUE_W, atol=0.05)
    assert len(calls) == 2
    rendered = np.asarray(d["rows"](np.concatenate([start, start, start])))  # rows 0, 1: the two starts
    for k, (args, (wk, losses)) in enumerate(calls):
        np.testing.assert_array_equal(args[8], start[k:k + 1])  # the uniform start, frame by frame
        np.testing.assert_array_equal(wk[0], w[k])
        assert losses.shape == (CFG.opt_steps + 1, 1)
        assert float(losses[-1, 0]) < 0.1 * float(losses[0, 0]), losses[[0, -1]]
        np.testing.assert_allclose(losses[0, 0], np.mean(np.square(rendered[k] - np.asarray(frames[k]))), rtol=1e-4)


@pytest.mark.slow  # a second compile of the whole w gradient; the remat path above runs the same maths
def test_optimise_weights_without_remat_same_optimum(setup):
    """Without remat: the same start loss and the same optimum (40 Adam steps amplify the last-bit
    differences of the two programs' gradients, so the paths agree to 1e-2, not bitwise)."""
    d, e = setup, setup["ends"]
    args = (d["unet"], d["vae"], e.lora0, e.lora1, e.x0, e.x1)
    frames, start = d["linear"][4:], it2v.position_weights(2)
    opt = jax.jit(it2v.optimise_weights, static_argnames="config")
    w, losses = opt(*args, d["text"], frames, start, d["sched"], CFG)
    plain_w, plain_losses = opt(*args, d["text"], frames, start, d["sched"], dataclasses.replace(CFG, remat=False))
    np.testing.assert_allclose(plain_losses[0], losses[0], rtol=1e-5)
    np.testing.assert_allclose(plain_w, w, atol=1e-2)
    np.testing.assert_allclose(plain_w, TRUE_W, atol=0.05)


@pytest.mark.slow  # the tiny preset's models compile for minutes on 2 cores; the tests above run the same functions
def test_docs_api_it2v_example_runs():
    from tests.test_api import run_docs_example

    run_docs_example("## CMVC IT2V")


def test_config_names_match_the_implementations():
    from m3cvc_jax.diffusion import morph
    from m3cvc_jax.nn import lora
    from m3cvc_jax.pipelines import it2v_config

    assert set(it2v_config.LORA_INITS) == set(lora.INITS)
    assert set(it2v_config.INTERPOLATIONS) == set(morph.METHODS)
