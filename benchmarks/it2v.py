"""`python -m benchmarks.it2v [--repeats N] [--steps S]`: CMVC IT2V's two heavy steps, JAX vs PyTorch.

Same computation and the same random weights on both sides (a diffusers UNet2DConditionModel and
AutoencoderKL at the `tiny` widths, converted into ours), latent 8x12 (64x96 frames), text 77x32, batch 1:

  lora step   one AdamW step of CMVC eq. 4 on the rank-16 LoRA of every attention projection (JAX: one
              step of the jitted `train_lora` scan, timed as a 10-step scan / 10; PyTorch: PEFT LoRA,
              forward + backward + torch.optim.AdamW.step)
  w step      value and gradient of one frame's L2 error w.r.t. (w_i, w_l) through S DDIM steps with the
              interpolated LoRA and the VAE decoder (JAX: `jax.value_and_grad` of `it2v.render`, remat on;
              PyTorch: autograd through a Python loop, the interpolated factors fed by torch.func.functional_call)

PyTorch runs at 1 and 2 threads, the better one counts. Also printed: the compiled temporary memory
(XLA's memory analysis) of the w gradient with and without remat. Last line:
`ratio=` JAX time / PyTorch time of the w step (medians; below 1 means JAX is faster). The machine is
shared: expect tens of percent of noise between runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

UNET = dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=2,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=8, sample_size=8)
VAE = dict(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8, latent_channels=4,
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
RANK, LATENT = 16, (8, 12)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build(seed: int = 0):
    import diffusers
    import torch

    from convert_weights import sd_unet, sd_vae
    from m3cvc_jax.nn.unet import UNet2DConditionModel, UNetConfig
    from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig
    from m3cvc_jax.weights import assign_params

    torch.manual_seed(seed)
    ref_unet = diffusers.UNet2DConditionModel(**UNET)
    ref_vae = diffusers.AutoencoderKL(**VAE)
    with torch.no_grad():  # every parameter random, zero-initialised ones too
        for name, p in list(ref_unet.named_parameters()) + list(ref_vae.named_parameters()):
            noise = torch.randn(p.shape)
            if p.ndim >= 2:
                p.copy_(noise / np.sqrt(p[0].numel()))
            else:
                p.copy_(0.2 * noise + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    unet_cfg = UNetConfig.from_diffusers(dict(ref_unet.config))
    vae_cfg = VAEConfig.from_diffusers(dict(ref_vae.config))
    unet = nnx.eval_shape(lambda: UNet2DConditionModel(unet_cfg, rngs=nnx.Rngs(0)))
    vae = nnx.eval_shape(lambda: AutoencoderKL(vae_cfg, rngs=nnx.Rngs(0)))
    state = lambda m: {k: v.detach().numpy() for k, v in m.state_dict().items()}  # noqa: E731
    assign_params(unet, sd_unet.convert_params(unet_cfg, state(ref_unet), lambda k: k.replace("Conv2d_0.", "conv.")))
    assign_params(vae, sd_vae.convert_params(vae_cfg, state(ref_vae), lambda k: k))
    return ref_unet, ref_vae, unet, vae


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of the w step")
    args = parser.parse_args(argv)
    import torch
    from diffusers import DDIMScheduler as TorchDDIM
    from peft import LoraConfig

    from m3cvc_jax.pipelines import it2v

    ref_unet, ref_vae, unet, vae = build()
    cfg = it2v.IT2VConfig(lora_rank=RANK, lora_steps=10, sampling_steps=args.steps)
    it2v.add_it2v_lora(unet, cfg)
    rng = np.random.default_rng(0)
    h, w = LATENT
    latent = jnp.asarray(rng.normal(size=(1, h, w, 4)), jnp.float32)
    text = jnp.asarray(rng.normal(size=(1, 77, 32)), jnp.float32)
    target = jnp.asarray(rng.uniform(-1, 1, (1, 8 * h, 8 * w, 3)), jnp.float32)
    sched = it2v.make_scheduler(args.steps)

    # ---------------------------------------------------------------- JAX
    train = jax.jit(it2v.train_lora, static_argnames="config")
    s0, _ = jax.block_until_ready(train(unet, latent, text, jax.random.key(0), cfg))
    s1 = jax.tree.map(lambda a: a + 0.01, s0)
    jax_lora = _median_time(lambda: jax.block_until_ready(train(unet, latent, text, jax.random.key(1), cfg)),
                            args.repeats) / cfg.lora_steps
    x_T = jnp.asarray(rng.normal(size=(1, h, w, 4)), jnp.float32)

    def loss(wv, remat):
        img = it2v.render(unet, vae, s0, s1, x_T, x_T * 0.5, wv[0], wv[1], text, sched, remat=remat)
        return jnp.mean(jnp.square(img - target))

    w0 = jnp.asarray([0.4, 0.6])
    grad_fns = {r: jax.jit(jax.value_and_grad(lambda wv, r=r: loss(wv, r))) for r in (True, False)}
    memory = {}
    for r, fn in grad_fns.items():
        compiled = fn.lower(w0).compile()
        analysis = compiled.memory_analysis()
        memory[r] = getattr(analysis, "temp_size_in_bytes", float("nan")) if analysis is not None else float("nan")
        jax.block_until_ready(fn(w0))
    jax_w = _median_time(lambda: jax.block_until_ready(grad_fns[True](w0)), args.repeats)
    jax_w_plain = _median_time(lambda: jax.block_until_ready(grad_fns[False](w0)), args.repeats)

    # ---------------------------------------------------------------- PyTorch
    ref_unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian",
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    lora_params = [p for n, p in ref_unet.named_parameters() if "lora_" in n]
    for n, p in ref_unet.named_parameters():
        p.requires_grad_("lora_" in n)
    opt = torch.optim.AdamW(lora_params, lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    tsched = TorchDDIM(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                       clip_sample=False, set_alpha_to_one=True)
    ab = tsched.alphas_cumprod
    z = torch.from_numpy(np.moveaxis(np.asarray(latent), -1, 1).copy())
    ctx = torch.from_numpy(np.asarray(text))

    def torch_lora_step():
        t = torch.randint(0, 1000, (1,))
        eps = torch.randn_like(z)
        zt = ab[t].sqrt() * z + (1 - ab[t]).sqrt() * eps
        loss_t = torch.mean((ref_unet(zt, t, ctx).sample - eps) ** 2)
        loss_t.backward()
        opt.step()
        opt.zero_grad()

    base = {n: p.detach() for n, p in ref_unet.named_parameters() if "lora_" not in n}
    f0 = {n: p.detach().clone() for n, p in ref_unet.named_parameters() if "lora_" in n}
    f1 = {n: v + 0.01 for n, v in f0.items()}
    xT = torch.from_numpy(np.moveaxis(np.asarray(x_T), -1, 1).copy())
    tgt = torch.from_numpy(np.moveaxis(np.asarray(target), -1, 1).copy())
    tsched.set_timesteps(args.steps)

    def torch_w_step():
        wv = torch.tensor([0.4, 0.6], requires_grad=True)
        mixed = {n: wv[1] * f0[n] + (1 - wv[1]) * f1[n] for n in f0}
        x = wv[0] * xT + (1 - wv[0]) * xT * 0.5
        for t in tsched.timesteps:
            eps = torch.func.functional_call(ref_unet, {**base, **mixed}, (x, t, ctx)).sample
            x = tsched.step(eps, t, x).prev_sample
        img = ref_vae.decode(x / 0.18215).sample
        loss_t = torch.mean((img - tgt) ** 2)
        loss_t.backward()
        return wv.grad

    torch_times = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch_lora_step(), torch_w_step()  # warm-up
        torch_times[threads] = (_median_time(torch_lora_step, args.repeats * 3),
                                _median_time(torch_w_step, args.repeats))
    best = min(torch_times, key=lambda k: torch_times[k][1])
    torch_lora, torch_w = torch_times[best]
    for threads, (tl, tw) in torch_times.items():
        print(f"torch {threads} thread(s): lora step {tl * 1e3:8.1f} ms, w step {tw * 1e3:8.1f} ms")
    print(f"jax:              lora step {jax_lora * 1e3:8.1f} ms, w step {jax_w * 1e3:8.1f} ms "
          f"(no remat {jax_w_plain * 1e3:.1f} ms)")
    print(f"w gradient temp memory: remat {memory[True] / 2**20:.2f} MiB, no remat {memory[False] / 2**20:.2f} MiB "
          f"({args.steps} DDIM steps, latent {h}x{w})")
    print(f"lora step ratio jax/torch: {jax_lora / torch_lora:.3f}")
    ratio = jax_w / torch_w
    print(f"ratio={ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
