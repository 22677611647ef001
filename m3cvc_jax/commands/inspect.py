"""`m3cvc inspect FILE [--json]`: what a bitstream holds and how many bits each part takes."""

from __future__ import annotations

import json
import sys

from m3cvc_jax.codec import colour_means, it2v_weights, rate_target
from m3cvc_jax.codec.bitstream import TAG_IT2V_WEIGHTS, TEXT_ONLY_MODES, colour_anchor_section, mean_colour_section
from m3cvc_jax.codec.decoder_settings import setting
from m3cvc_jax.commands import stand_ins
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.io.bitstream_file import read_bitstream_with_bits
from m3cvc_jax.lmm import tt2v_prompt

DESCRIPTION = (
    "Show a bitstream's header, keyframe positions, texts, bits per part and bpp "
    "(bits of the real file / (width * height * num_frames))."
)


def register(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="show what a bitstream holds", description=DESCRIPTION)
    p.add_argument("input", metavar="FILE", help="an m3cvc bitstream")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def describe(stream, bits) -> dict:
    """The JSON-able summary `inspect --json` prints."""
    h = stream.header
    return {
        "version": stream.version,
        "width": h.width,
        "height": h.height,
        "fps": float(h.fps),
        "fps_rational": f"{h.fps.numerator}/{h.fps.denominator}",
        "num_frames": h.num_frames,
        "keyframes": list(h.keyframes),
        "mode": h.mode,
        "preset": h.preset,
        "weights_fingerprint": h.weights_fingerprint,
        "seed": h.seed,
        "keyframe_method": h.keyframe_method,
        "text_codec": h.text_codec,
        "index_grid": list(h.index_grid),
        "codebook_size": h.codebook_size,
        "entropy_model": h.entropy_model,
        "texts": {"keyframe": list(stream.keyframe_texts), "clip": list(stream.clip_texts)},
        "index_bytes": [len(b) for b in stream.index_data],
        "extra_sections": [{"tag": e.tag, "bytes": len(e.payload)} for e in stream.extras],
        "bits": bits.as_dict(),
        "it2v_weights": it2v_summary(stream, bits),
        "mean_colours": mean_colour_summary(stream, bits),
        "bpp": bits.bpp(h),
        "rate_target": _rate_target(stream, bits),
        "stand_ins": stand_ins.from_stream(stream),
        **({"t2v_prompts": t2v_prompts(stream)} if h.mode in TEXT_ONLY_MODES else {}),
    }


def it2v_summary(stream, bits) -> dict | None:
    """The coded (w_i, w_l) per in-between frame of an it2v stream, their bit width and section bits."""
    h = stream.header
    section = [e for e in stream.extras if e.tag == TAG_IT2V_WEIGHTS and not e.skippable]
    if h.mode != "it2v" or not section:
        return None
    codes, nbits = it2v_weights.unpack(section[0].payload, it2v_weights.inbetween_count(h.keyframes, h.num_frames))
    levels = (1 << nbits) - 1
    frames = [f for a, b in zip(h.keyframes, h.keyframes[1:]) for f in range(a + 1, b)]
    return {"bits_per_weight": nbits, "section_bits": bits.weights, "code_bits": 2 * nbits * len(frames),
            "frames": [{"frame": f, "w_i": int(c[0]) / levels, "w_l": int(c[1]) / levels, "codes": [int(c[0]), int(c[1])]}
                       for f, c in zip(frames, codes)]}


def mean_colour_summary(stream, bits) -> dict | None:
    """The transmitted per-channel means of the original keyframes (RGB, 0..255), their codes and bits."""
    section = mean_colour_section(stream.extras)
    if section is None:
        return None
    keyframes = stream.header.keyframes
    codes, nbits = colour_means.unpack(section.payload, len(keyframes))
    means = colour_means.dequantise(codes, nbits)
    out = {"bits_per_channel": nbits, "section_bits": bits.colour, "code_bits": 3 * nbits * len(keyframes),
           "keyframes": [{"frame": k, "rgb": [round(float(m), 3) for m in mean], "codes": [int(c) for c in code]}
                         for k, mean, code in zip(keyframes, means, codes)], "anchors": []}
    anchors = colour_anchor_section(stream.extras)
    if anchors is not None:
        h = stream.header
        frames, codes = colour_means.unpack_anchors(anchors.payload, nbits, keyframes, h.num_frames)
        out["code_bits"] += 3 * nbits * len(frames)
        out["anchors"] = [{"frame": int(f), "rgb": [round(float(m), 3) for m in mean], "codes": [int(c) for c in code]}
                          for f, mean, code in zip(frames, colour_means.dequantise(codes, nbits), codes)]
    return out


def _rate_target(stream, bits) -> dict | None:
    """The target the encoder was given (`--target-bpp/--target-bytes`) and what the file achieved."""
    target = rate_target.from_stream(stream)
    if target is None:
        return None
    h = stream.header
    return {"target": target.label, "target_bytes": target.max_bytes(h.width, h.height, h.num_frames),
            "achieved_bytes": bits.total // 8, "achieved_bpp": bits.bpp(h)}


def t2v_prompts(stream) -> dict:
    """What a tt2v decoder conditions each clip on: the template the stream names (default: the bundled
    one) applied to its texts; an unreadable template is reported, not fatal."""
    path = setting(stream, "t2v.template") or tt2v_prompt.DEFAULT_TEMPLATE
    try:
        template = tt2v_prompt.load_template(path)
        clips = tt2v_prompt.clip_prompts(template, stream.keyframe_texts, stream.clip_texts)
    except ConfigError as e:
        return {"template": path, "error": str(e)}
    return {"template": path, "negative": template.negative_prompt, "clip": clips}


def _human(info: dict) -> str:
    b = info["bits"]
    lines = [
        f"m3cvc bitstream v{info['version']}: {info['width']}x{info['height']}, "
        f"{info['num_frames']} frames at {info['fps_rational']} fps ({info['fps']:.3f})",
        f"keyframes      {info['keyframes']}",
        f"mode           {info['mode']}   keyframe method {info['keyframe_method']}   seed {info['seed']}",
        f"preset         {info['preset']}   weights {info['weights_fingerprint'] or '<none>'}",
        f"coding         text {info['text_codec']}; " + (
            "no indices (texts only)" if "t2v_prompts" in info else
            f"indices {info['index_grid'][0]}x{info['index_grid'][1]} of {info['codebook_size']} words, "
            f"{info['entropy_model']} model"),
        f"bits           header {b['header']}, text {b['text']}, indices {b['indices']}, "
        f"extra {b['extra']}, w {b['weights']}, colour {b['colour']}, total {b['total']}",
        f"bpp            {info['bpp']:.6g}",
    ]
    r = info["rate_target"]
    if r:
        lines.append(f"rate target    {r['target']} (<= {r['target_bytes']} bytes), achieved {r['achieved_bytes']} "
                     f"bytes = {r['achieved_bpp']:.6g} bpp")
    lines += [f"stand-in       {s}" for s in info["stand_ins"]]
    w = info["it2v_weights"]
    if w:
        lines.append(f"it2v weights   {len(w['frames'])} frames x (w_i, w_l) at {w['bits_per_weight']} bits: "
                     f"{w['code_bits']} bits of codes, {w['section_bits']} bits with the section framing")
        lines += [f"  frame {x['frame']}: w_i {x['w_i']:.4f} w_l {x['w_l']:.4f} (codes {x['codes'][0]}, {x['codes'][1]})"
                  for x in w["frames"]]
    m = info["mean_colours"]
    if m:
        anchors = f" + {len(m['anchors'])} anchors between them" if m["anchors"] else ""
        lines.append(f"mean colours   {len(m['keyframes'])} keyframes{anchors} x RGB at {m['bits_per_channel']} bits: "
                     f"{m['code_bits']} bits of codes, {m['section_bits']} bits with the section framing")
        lines += [f"  frame {x['frame']}: RGB " + " ".join(f"{v:.1f}" for v in x["rgb"])
                  + f" (codes {', '.join(map(str, x['codes']))}){' anchor' if x in m['anchors'] else ''}"
                  for x in sorted(m["keyframes"] + m["anchors"], key=lambda x: x["frame"])]
    for i, (k, t) in enumerate(zip(info["keyframes"], info["texts"]["keyframe"])):
        lines.append(f"keyframe {i} (frame {k}): {t}")
    for i, t in enumerate(info["texts"]["clip"]):
        lines.append(f"clip {i}: {t}")
    prompts = info.get("t2v_prompts")
    if prompts is not None:
        lines.append(f"t2v template   {prompts['template']}")
        if "error" in prompts:
            lines.append(f"t2v prompts    not composed: {prompts['error']}")
        else:
            lines.append(f"t2v negative   {prompts['negative']!r}")
            lines += [f"t2v prompt {i}: {p}" for i, p in enumerate(prompts["clip"])]
    return "\n".join(printable(line) for line in lines)


def printable(text: str) -> str:
    """Non-printable characters as Python escapes (\\x1b, \\u202e, \\n): a crafted stream's texts must not
    drive the terminal (escape sequences, bidi overrides) or forge extra lines of the listing."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def run(args) -> int:
    stream, bits = read_bitstream_with_bits(args.input)
    info = describe(stream, bits)
    if hasattr(sys.stdout, "reconfigure"):
        # Texts are arbitrary Unicode; a non-UTF-8 terminal or a lone surrogate must not crash the listing.
        sys.stdout.reconfigure(errors="backslashreplace")
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else _human(info))
    return 0
