"""Qwen2-VL text generation: prefill time and decode tokens/s, our jitted JAX loop vs transformers PyTorch.

    python -m benchmarks.lmm_decode [--configs tiny,0.5b] [--prompt 128] [--new 32]

Both sides hold the same random weights (ours mapped from the reference's state dict with the converter's
rename rules). PyTorch runs a manual KV-cache loop at 1 and 2 threads and its best is reported. Last
line: ratio = JAX decode tokens/s / PyTorch decode tokens/s on the largest config.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from convert_weights.core import abstract_shapes, map_onto
from convert_weights.qwen2_vl import hf_config_dict, rename
from m3cvc_jax.lmm.generate import Generator, SamplingConfig
from m3cvc_jax.nn.qwen2_vl import (
    Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLTextConfig, Qwen2VLVisionConfig,
)
from m3cvc_jax.weights import assign_params

CONFIGS = {
    "tiny": Qwen2VLConfig.preset("tiny"),
    # Qwen2-0.5B-shaped decoder; vocabulary cut to keep two copies of the weights small on this machine.
    "0.5b": Qwen2VLConfig(
        text=Qwen2VLTextConfig(vocab_size=32768, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                               num_attention_heads=14, num_key_value_heads=2, mrope_section=(16, 8, 8)),
        vision=Qwen2VLVisionConfig(depth=1, embed_dim=32, hidden_size=896, num_heads=2),
        bos_token_id=32000, eos_token_id=32001, image_token_id=32002, video_token_id=32003,
        vision_start_token_id=32004, vision_end_token_id=32005, tie_word_embeddings=True,
    ),
}


def build_pair(cfg: Qwen2VLConfig):
    import torch
    import transformers
    from flax import nnx

    torch.manual_seed(0)
    ref = transformers.Qwen2VLForConditionalGeneration(transformers.Qwen2VLConfig(**hf_config_dict(cfg))).eval()
    shapes = abstract_shapes(lambda: Qwen2VLForConditionalGeneration(cfg, rngs=nnx.Rngs(0)))
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    params = map_onto(shapes, state, rename=lambda k: rename(k, tied=cfg.tie_word_embeddings))
    from m3cvc_jax.lmm.model_io import random_model

    ours = random_model(cfg)
    assign_params(ours, params)
    return ref, ours


def time_torch(ref, ids: np.ndarray, new: int, threads: int) -> tuple[float, float]:
    import torch

    torch.set_num_threads(threads)
    x = torch.from_numpy(ids).long()
    with torch.no_grad():
        ref(x[:, :8], use_cache=True)  # warm-up
        t0 = time.perf_counter()
        out = ref(x, use_cache=True)
        t1 = time.perf_counter()
        past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t2 = time.perf_counter()
        for _ in range(new - 1):
            out = ref(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t3 = time.perf_counter()
    return t1 - t0, (new - 1) / (t3 - t2)


def time_jax(ours, ids: np.ndarray, new: int) -> tuple[float, float, float]:
    gen = Generator(ours, length_bucket=64)
    sampling = SamplingConfig(max_new_tokens=new)
    p = gen.prepare(ids, max_new_tokens=new)
    key = jax.random.key(0)

    t0 = time.perf_counter()
    tokens, n, _ = jax.block_until_ready(gen.decode(p, *gen.prefill(p, sampling, key), sampling, key))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    first, cache = jax.block_until_ready(gen.prefill(p, sampling, key))
    t1 = time.perf_counter()
    tokens, n, _ = jax.block_until_ready(gen.decode(p, first, cache, sampling, key))
    t2 = time.perf_counter()
    assert int(n) == new
    return t1 - t0, (new - 1) / (t2 - t1), compile_s


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="tiny,0.5b")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=32)
    args = ap.parse_args(argv)
    ratio = None
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        ref, ours = build_pair(cfg)
        ids = np.random.default_rng(0).integers(0, min(cfg.text.vocab_size, 30000), size=(1, args.prompt))
        j_pre, j_tps, j_compile = time_jax(ours, ids, args.new)
        best = max((time_torch(ref, ids, args.new, t) + (t,) for t in (1, 2)), key=lambda r: r[1])
        print(f"{name}: prompt {args.prompt} tokens, {args.new} new")
        print(f"  jax    prefill {j_pre * 1e3:8.1f} ms  decode {j_tps:8.1f} tok/s  (compile {j_compile:.1f} s)")
        print(f"  torch  prefill {best[0] * 1e3:8.1f} ms  decode {best[1]:8.1f} tok/s  ({best[2]} thread(s))")
        print(f"  decode speed-up {j_tps / best[1]:.2f}x, prefill speed-up {best[0] / j_pre:.2f}x")
        ratio = j_tps / best[1]
        del ref, ours
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
