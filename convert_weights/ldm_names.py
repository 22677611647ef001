"""Original CompVis/LDM key names of single-file SD checkpoints <-> diffusers names.

Both directions come from one prefix table per model so they cannot drift apart; the inverse exists for
tests (an LDM-named state dict is built from a diffusers model). Facts of the LDM layout:

UNet (`model.diffusion_model.`): `input_blocks.0.0` is conv_in; then per down block `layers_per_block`
slots `input_blocks.k.{0: resnet, 1: transformer}` and, except in the last block, one slot
`input_blocks.k.0.op` (downsampler). `middle_block.{0,1,2}` = resnet, transformer, resnet. Per up block
`layers_per_block + 1` slots `output_blocks.k.{0: resnet, 1: transformer}`; the upsampler is the next
index in the last slot (`.1.conv` without attention, `.2.conv` with). `time_embed.{0,2}`, `out.{0,2}`.
Resnets: in_layers.{0,2} = norm1/conv1, emb_layers.1 = time_emb_proj, out_layers.{0,3} = norm2/conv2,
skip_connection = conv_shortcut. Transformers already use diffusers' inner names.

VAE (`first_stage_model.`): `encoder.down.i.block.j`, `encoder.down.i.downsample.conv`, `mid.block_1`,
`mid.attn_1`, `mid.block_2`, `norm_out`; the decoder's `up.i` counts from the LOWEST resolution upwards
in reverse of diffusers' `up_blocks` (up.i = up_blocks.(n-1-i)). Resnets: nin_shortcut = conv_shortcut.
Mid attention: norm, q, k, v, proj_out = group_norm, to_q, to_k, to_v, to_out.0 (1x1 convs).
"""

from __future__ import annotations

from typing import Callable

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

_UNET_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_VAE_RESNET = {"nin_shortcut": "conv_shortcut"}
_VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
# Old diffusers folders (before 0.14) named the VAE attention like this.
_OLD_DIFFUSERS_VAE_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def unet_table(layers_per_block: int, attention_down: tuple[bool, ...], attention_up: tuple[bool, ...]
               ) -> list[tuple[str, str, dict[str, str]]]:
    """(LDM prefix, diffusers prefix, inner renames) for every module of an SD UNet."""
    rows = [("time_embed.0", "time_embedding.linear_1", {}), ("time_embed.2", "time_embedding.linear_2", {}),
            ("input_blocks.0.0", "conv_in", {}), ("out.0", "conv_norm_out", {}), ("out.2", "conv_out", {}),
            ("middle_block.0", "mid_block.resnets.0", _UNET_RESNET),
            ("middle_block.1", "mid_block.attentions.0", {}),
            ("middle_block.2", "mid_block.resnets.1", _UNET_RESNET)]
    n = len(attention_down)
    k = 1
    for b in range(n):
        for j in range(layers_per_block):
            rows.append((f"input_blocks.{k}.0", f"down_blocks.{b}.resnets.{j}", _UNET_RESNET))
            if attention_down[b]:
                rows.append((f"input_blocks.{k}.1", f"down_blocks.{b}.attentions.{j}", {}))
            k += 1
        if b < n - 1:
            rows.append((f"input_blocks.{k}.0.op", f"down_blocks.{b}.downsamplers.0.conv", {}))
            k += 1
    k = 0
    for b in range(n):
        for j in range(layers_per_block + 1):
            rows.append((f"output_blocks.{k}.0", f"up_blocks.{b}.resnets.{j}", _UNET_RESNET))
            if attention_up[b]:
                rows.append((f"output_blocks.{k}.1", f"up_blocks.{b}.attentions.{j}", {}))
            if b < n - 1 and j == layers_per_block:
                slot = 2 if attention_up[b] else 1
                rows.append((f"output_blocks.{k}.{slot}.conv", f"up_blocks.{b}.upsamplers.0.conv", {}))
            k += 1
    return rows


def vae_table(num_blocks: int, layers_per_block: int) -> list[tuple[str, str, dict[str, str]]]:
    rows = [("quant_conv", "quant_conv", {}), ("post_quant_conv", "post_quant_conv", {})]
    for part in ("encoder", "decoder"):
        rows += [(f"{part}.conv_in", f"{part}.conv_in", {}), (f"{part}.conv_out", f"{part}.conv_out", {}),
                 (f"{part}.norm_out", f"{part}.conv_norm_out", {}),
                 (f"{part}.mid.block_1", f"{part}.mid_block.resnets.0", _VAE_RESNET),
                 (f"{part}.mid.block_2", f"{part}.mid_block.resnets.1", _VAE_RESNET),
                 (f"{part}.mid.attn_1", f"{part}.mid_block.attentions.0", _VAE_ATTN)]
    for i in range(num_blocks):
        for j in range(layers_per_block):
            rows.append((f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}", _VAE_RESNET))
        if i < num_blocks - 1:
            rows.append((f"encoder.down.{i}.downsample.conv", f"encoder.down_blocks.{i}.downsamplers.0.conv", {}))
        b = num_blocks - 1 - i
        for j in range(layers_per_block + 1):
            rows.append((f"decoder.up.{i}.block.{j}", f"decoder.up_blocks.{b}.resnets.{j}", _VAE_RESNET))
        if i > 0:
            rows.append((f"decoder.up.{i}.upsample.conv", f"decoder.up_blocks.{b}.upsamplers.0.conv", {}))
    return rows


def renamer(rows: list[tuple[str, str, dict[str, str]]], *, to_ldm: bool = False) -> Callable[[str], str]:
    """Key renaming function LDM -> diffusers (or the reverse); unknown keys pass through unchanged
    so that `map_onto` reports them as unexpected."""
    table = {(d if to_ldm else l): ((l if to_ldm else d), {v: k for k, v in inner.items()} if to_ldm else inner)
             for l, d, inner in rows}

    def rename(key: str) -> str:
        # Longest matching module prefix: walk the dots from the right.
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:cut])
            if prefix in table:
                new, inner = table[prefix]
                rest = ".".join(parts[cut:])
                mod, _, leaf = rest.rpartition(".")
                return f"{new}.{inner.get(mod, mod)}.{leaf}" if mod else f"{new}.{leaf}"
        return key

    return rename


def old_diffusers_vae_rename(key: str) -> str:
    """Pre-0.14 diffusers VAE attention names -> current ones."""
    head, _, rest = key.partition("mid_block.attentions.0.")
    if not rest:
        return key
    mod, _, leaf = rest.rpartition(".")
    return f"{head}mid_block.attentions.0.{_OLD_DIFFUSERS_VAE_ATTN.get(mod, mod)}.{leaf}"
