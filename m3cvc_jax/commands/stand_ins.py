"""Which parts of M3-CVC a run replaced by a stand-in, in words `encode` and `inspect` print.

A stream made without CLIP/RAFT keyframe decisions, without Qwen2-VL texts or with weights that are not
the paper's is still a valid stream; saying so next to its bpp keeps a demo or smoke result from being
read as the method's.
"""

from __future__ import annotations

WEIGHTS = {
    "tiny": "random weights (tiny preset): every stage runs, the pictures are noise",
    "demo": "the bundled demo weights trained here at toy widths (docs/demo.md), not the paper's",
}
FIXED_KEYFRAMES = "keyframes at a fixed interval, not chosen by CLIP semantics + optical flow"
NO_TEXTS = "no texts (describer none): the decoder is conditioned on the empty prompt"


def from_config(config) -> list[str]:
    """Stand-ins an encode with `config` (a pipelines/presets.py tree) uses."""
    out = [WEIGHTS[config.preset]] if config.preset in WEIGHTS else []
    k = config.keyframes
    if k.method == "fixed":
        out.append(f"{FIXED_KEYFRAMES} (every {k.interval} frames)")
    elif k.flow_model == "classical" and k.method in ("m3cvc", "cmvc"):
        out.append("Lucas-Kanade optical flow instead of RAFT for the motion term")
    describer = config.dialogue.describer
    if describer == "none":
        out.append(NO_TEXTS)
    elif describer == "fixed":
        out.append(f"texts read from {config.dialogue.texts or 'a file'}, not written by Qwen2-VL")
    return out


def from_stream(stream) -> list[str]:
    """Stand-ins visible in a stream itself (its preset, keyframe method and texts)."""
    h = stream.header
    out = [WEIGHTS[h.preset]] if h.preset in WEIGHTS else []
    if h.keyframe_method == "fixed":
        out.append(FIXED_KEYFRAMES)
    if not any(t for t in (*stream.keyframe_texts, *stream.clip_texts)):
        out.append(NO_TEXTS)
    return out
