"""LoRA maths and key names against diffusers' own LoRA loading (PEFT), through `convert_weights sd-lora`.

A tiny diffusers UNet2DConditionModel with every parameter random gets random LoRA factors (B non-zero,
alpha != rank) loaded by diffusers (`lora_state_dict` + `load_lora_into_unet`, what `load_lora_weights`
runs); the same file goes through our converter into our UNet; outputs must agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from m3cvc_jax.errors import WeightsError  # noqa: E402
from m3cvc_jax.nn import lora  # noqa: E402
from m3cvc_jax.weights import load_checkpoint  # noqa: E402
from tests.sd_reference import nchw, nhwc  # noqa: E402
from tests.test_sd_unet_parity import SD1, convert_and_load, reference_unet  # noqa: E402

pytestmark = pytest.mark.parity
torch.set_num_threads(1)
RANK = 4


def attention_projections(ref) -> list[str]:
    """The reference's own module names of every attention q/k/v/out Linear."""
    return sorted(n for n, m in ref.named_modules()
                  if isinstance(m, torch.nn.Linear) and n.endswith(("to_q", "to_k", "to_v", "to_out.0")))


def random_factors(names, in_out, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    out = {}
    for n in names:
        i, o = in_out[n]
        out[n] = (rng.normal(size=(RANK, i)).astype(np.float32) * scale / np.sqrt(i),
                  rng.normal(size=(o, RANK)).astype(np.float32) * scale)  # B non-zero: the update is visible
    return out


def shapes_of(ref, names):
    mods = dict(ref.named_modules())
    return {n: (mods[n].in_channels, mods[n].out_channels) if isinstance(mods[n], torch.nn.Conv2d)
            else (mods[n].in_features, mods[n].out_features) for n in names}


# One jitted forward for every test: nnx.jit caches on the model's graph, so a model with the same
# LoRA layout reuses the compiled program (these tests are compile-bound).
_forward = nnx.jit(lambda m, x, t, c: m(x, t, c))


def run_pair(ref, ours, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 8, 12, 4)).astype(np.float32)
    ctx = rng.normal(size=(2, 5, SD1["cross_attention_dim"])).astype(np.float32)
    t = np.array([10.0, 870.0], np.float32)
    with torch.no_grad():
        want = nhwc(ref(torch.from_numpy(nchw(x)), torch.from_numpy(t), torch.from_numpy(ctx)).sample)
    got = np.asarray(_forward(ours, jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx)))
    return got, want


def check(got, want):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())), rtol=0)


def load_ours(ref, tmp_path, lora_file, **opts):
    from convert_weights import sd_lora

    ours = convert_and_load(ref, tmp_path)
    ref.save_config(tmp_path / "unet_cfg")
    sd_lora.convert(str(lora_file), str(tmp_path / "lora"), config=str(tmp_path / "unet_cfg" / "config.json"), **opts)
    meta, params = load_checkpoint(str(tmp_path / "lora"), family="sd-lora")
    lora.add_lora_layers(ours, meta["config"]["layers"])
    lora.set_lora(ours, params)
    return ours, meta


def load_reference(ref, lora_file):
    from diffusers import StableDiffusionPipeline

    # What StableDiffusionPipeline.load_lora_weights runs for the UNet (without building a pipeline).
    sd, alphas, metadata = StableDiffusionPipeline.lora_state_dict(str(lora_file), return_lora_metadata=True)
    StableDiffusionPipeline.load_lora_into_unet(sd, alphas, ref, metadata=metadata)
    return ref


def kohya_targets(ref) -> list[str]:
    """kohya's SD1 LoRA layers: the attention projections, proj_in/proj_out (1x1 convs in SD1: 4-D factors)
    and the feed-forward output. Both format tests adapt these, so they share one compiled forward."""
    return attention_projections(ref) + sorted(
        n for n in dict(ref.named_modules()) if n.endswith(("proj_in", "proj_out", "ff.net.2")) and "attentions" in n)


def test_lora_parity_peft_format(tmp_path):
    ref = reference_unet(SD1, seed=3)
    blocks = [n for n in dict(ref.named_modules()) if n.endswith(("attn1", "attn2"))]
    assert len(attention_projections(ref)) == 4 * len(blocks) == 56  # 7 transformer blocks x (self, cross) x (q, k, v, out)
    names = kohya_targets(ref)
    mods = dict(ref.named_modules())
    factors = random_factors(names, shapes_of(ref, names), seed=4)
    with torch.no_grad():
        base = nhwc(ref(torch.zeros(1, 4, 8, 12), torch.tensor([5.0]), torch.zeros(1, 5, 24)).sample)
    state = {}
    for n, (a, b) in factors.items():
        if isinstance(mods[n], torch.nn.Conv2d):  # PEFT's Conv2d LoRA: 1x1 conv factors
            a, b = a[:, :, None, None], b[:, :, None, None]
        state[f"unet.{n}.lora_A.weight"], state[f"unet.{n}.lora_B.weight"] = a, b
    alpha = 3.0  # != RANK: the alpha/rank scaling is exercised
    save_file(state, str(tmp_path / "pytorch_lora_weights.safetensors"),
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps(
                  # as diffusers' training scripts save their LoraConfig
                  {"unet.r": RANK, "unet.lora_alpha": alpha,
                   "unet.target_modules": ["to_k", "to_q", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2"],
                   "unet.init_lora_weights": "gaussian"})})
    ours, meta = load_ours(ref, tmp_path, tmp_path / "pytorch_lora_weights.safetensors")
    assert {p: s["alpha"] for p, s in meta["config"]["layers"].items()} == {n: alpha for n in names}
    ref = load_reference(ref, tmp_path / "pytorch_lora_weights.safetensors")
    got, want = run_pair(ref, ours)
    check(got, want)
    with torch.no_grad():
        moved = nhwc(ref(torch.zeros(1, 4, 8, 12), torch.tensor([5.0]), torch.zeros(1, 5, 24)).sample)
    assert np.abs(moved - base).max() > 1e-2  # the LoRA really changes the reference's output


def test_lora_parity_kohya_format(tmp_path):
    ref = reference_unet(SD1, seed=5)
    mods = dict(ref.named_modules())
    names = kohya_targets(ref)
    rng = np.random.default_rng(6)
    state, alphas = {}, {}
    for i, n in enumerate(names):
        m = mods[n]
        conv = isinstance(m, torch.nn.Conv2d)
        fan_in, fan_out = (m.in_channels, m.out_channels) if conv else (m.in_features, m.out_features)
        a = rng.normal(size=(RANK, fan_in)).astype(np.float32) * 0.3 / np.sqrt(fan_in)
        b = rng.normal(size=(fan_out, RANK)).astype(np.float32) * 0.3
        if conv:
            a, b = a[:, :, None, None], b[:, :, None, None]
        flat = "lora_unet_" + n.replace(".", "_")
        state[f"{flat}.lora_down.weight"], state[f"{flat}.lora_up.weight"] = a, b
        # One alpha for all: diffusers' kohya conversion drops per-layer alphas that differ from the most
        # common one (its alpha_pattern keeps the old processor names), so only a shared alpha compares.
        alphas[n] = 3.0
        state[f"{flat}.alpha"] = np.asarray(alphas[n], np.float32)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in state
    save_file(state, str(tmp_path / "kohya.safetensors"))
    ours, meta = load_ours(ref, tmp_path, tmp_path / "kohya.safetensors")
    assert {p: s["alpha"] for p, s in meta["config"]["layers"].items()} == alphas
    ref = load_reference(ref, tmp_path / "kohya.safetensors")
    check(*run_pair(ref, ours, seed=1))


def test_lora_converter_layouts_agree(tmp_path):
    """The old attention-processor layout (DiffMorpher's files) and PEFT keys convert to the same factors;
    a wrong key or a text-encoder LoRA is a one-line error."""
    from convert_weights import sd_lora

    ref = reference_unet(SD1, seed=7)
    names = attention_projections(ref)
    factors = random_factors(names, shapes_of(ref, names), seed=8)
    ref.save_config(tmp_path / "cfg")
    cfg = str(tmp_path / "cfg" / "config.json")
    peft, procs = {}, {}
    for n, (a, b) in factors.items():
        peft[f"{n}.lora_A.default.weight"], peft[f"{n}.lora_B.default.weight"] = a, b
        head, _, proj = n.rpartition(".to_")
        proj = "out" if proj == "out.0" else proj
        if n.endswith("to_out.0"):
            head = n[: -len(".to_out.0")]
        procs[f"{head}.processor.to_{proj}_lora.down.weight"], procs[f"{head}.processor.to_{proj}_lora.up.weight"] = a, b
    save_file(peft, str(tmp_path / "peft.safetensors"))
    save_file(procs, str(tmp_path / "procs.safetensors"))
    fp1 = sd_lora.convert(str(tmp_path / "peft.safetensors"), str(tmp_path / "a"), config=cfg, alpha=2.0)
    fp2 = sd_lora.convert(str(tmp_path / "procs.safetensors"), str(tmp_path / "b"), config=cfg, alpha=2.0)
    assert fp1 == fp2
    _, params = load_checkpoint(str(tmp_path / "a"))
    n0 = names[0]
    np.testing.assert_array_equal(params[f"{n0}.lora_A.kernel"], factors[n0][0].T)
    bad = dict(peft, **{"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": factors[n0][0]})
    save_file(bad, str(tmp_path / "te.safetensors"))
    with pytest.raises(WeightsError, match="--skip-text-encoder"):
        sd_lora.convert(str(tmp_path / "te.safetensors"), str(tmp_path / "c"), config=cfg)
    assert sd_lora.convert(str(tmp_path / "te.safetensors"), str(tmp_path / "c"), config=cfg, alpha=2.0,
                           skip_text_encoder=True) == fp1
    wrong = {k.replace("transformer_blocks.0", "transformer_blocks.5"): v for k, v in peft.items()}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(WeightsError, match="does not match|not in the model"):
        sd_lora.convert(str(tmp_path / "wrong.safetensors"), str(tmp_path / "d"), config=cfg)


def test_lora_module_merge_interpolate_dtype():
    """Fresh LoRA changes nothing; merge/unmerge round trip; interpolation endpoints; bf16 compute."""
    from m3cvc_jax.nn.unet import CROSS_DOWN, CROSS_UP, UNet2DConditionModel, UNetConfig
    from m3cvc_jax.random_weights import random_module
    from m3cvc_jax.weights import fingerprint, flat_params

    # One level with cross-attention blocks: 4 transformers (down 1, mid 1, up 2) x 2 attentions x 4 projections.
    cfg = UNetConfig(block_out_channels=(16,), layers_per_block=1, down_block_types=(CROSS_DOWN,),
                     up_block_types=(CROSS_UP,), cross_attention_dim=8, num_attention_heads=2, norm_num_groups=4)
    model = random_module(lambda r: UNet2DConditionModel(cfg, rngs=r), 0, "unet")
    fp = fingerprint(flat_params(model))
    x, t, ctx = jnp.ones((1, 8, 8, 4)), jnp.full((1,), 10.0), jnp.ones((1, 5, 8))
    paths = lora.add_lora(model, rank=RANK, alpha=8, key=jax.random.key(1))
    assert fingerprint(flat_params(model)) == fp  # base params untouched, LoRA factors not Params
    assert len(paths) == 32 and all(p.endswith(("to_q", "to_k", "to_v", "to_out.0")) for p in paths)
    # B = 0 at init: each LoRA layer is its base Linear bit for bit (layer level: no extra UNet compile).
    layer = lora.lora_layers(model)[next(p for p in paths if p.endswith("to_out.0"))]  # a kernel and a bias
    base = nnx.Linear(layer.in_features, layer.out_features, rngs=nnx.Rngs(0))
    base.kernel[...], base.bias[...] = layer.kernel[...], layer.bias[...]
    h = jax.random.normal(jax.random.key(2), (3, layer.in_features))
    np.testing.assert_array_equal(layer(h), base(h))
    s0 = jax.tree.map(lambda a: a + 0.05, lora.lora_state(model))
    s1 = jax.tree.map(lambda a: a - 0.05, lora.lora_state(model))
    mixed = lora.interpolate(s0, s1, 0.25)
    leaf0, leaf1, leafm = (jax.tree.leaves(s)[0] for s in (s0, s1, mixed))
    np.testing.assert_allclose(leafm, 0.25 * np.asarray(leaf0) + 0.75 * np.asarray(leaf1), rtol=1e-6)
    y_fresh = _forward(model, x, t, ctx)
    nnx.update(model, lora.interpolate(s0, s1, 1.0))
    y1 = _forward(model, x, t, ctx)
    nnx.update(model, s0)
    np.testing.assert_array_equal(_forward(model, x, t, ctx), y1)
    assert float(jnp.abs(y1 - y_fresh).max()) > 1e-3
    lora.merge(model)
    np.testing.assert_allclose(_forward(model, x, t, ctx), y1, atol=1e-5 * float(jnp.abs(y1).max()))
    lora.unmerge(model)
    np.testing.assert_allclose(_forward(model, x, t, ctx), y1, atol=1e-5 * float(jnp.abs(y1).max()))
    # bfloat16: factors stored in the layer's param dtype, compute within 5% (layer level).
    half = nnx.Linear(layer.in_features, layer.out_features, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
                      rngs=nnx.Rngs(0))
    half.kernel[...], half.bias[...] = layer.kernel[...].astype(jnp.bfloat16), layer.bias[...].astype(jnp.bfloat16)
    low = lora.LoRALinear(half, RANK, 8, key=jax.random.key(1))
    assert low.lora_A.kernel.dtype == jnp.bfloat16 == low.lora_B.kernel.dtype
    low.lora_A.kernel[...] = layer.lora_A.kernel[...].astype(jnp.bfloat16)
    low.lora_B.kernel[...] = layer.lora_B.kernel[...].astype(jnp.bfloat16)
    want, got = layer(h), low(h)
    assert got.dtype == jnp.bfloat16 and float(jnp.abs(want).max()) > 0
    assert float(jnp.abs(got.astype(jnp.float32) - want).max() / jnp.abs(want).max()) < 0.05
