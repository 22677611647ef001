"""A small but complete v1 stream shared by the bitstream, CLI and fuzz tests."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from m3cvc_jax.codec.bitstream import Bitstream, ExtraSection, Header
from m3cvc_jax.codec.entropy import IndexModel, encode_indices

GRID = (8, 8)
MODEL = IndexModel("adaptive", 16)


def sample_maps(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 16, size=GRID) for _ in range(n)]


def sample_stream(text_codec: str = "lzw", extras: tuple = ()) -> Bitstream:
    header = Header(
        width=512,
        height=320,
        fps=Fraction(8),
        num_frames=40,
        keyframes=(0, 13, 39),
        mode="interpolation",
        preset="tiny",
        weights_fingerprint="0123456789abcdef",
        seed=1234,
        keyframe_method="m3cvc",
        text_codec=text_codec,
        index_grid=GRID,
        codebook_size=16,
        entropy_model="adaptive",
    )
    return Bitstream(
        header=header,
        keyframe_texts=(
            "A cyclist in a red jersey rides along a tree-lined road; bright daylight.",
            "The cyclist is now closer; a second rider appears behind him. Café sign: «Ouvert» 🚲",
            "",
        ),
        clip_texts=("The cyclist rides toward the camera.", "The camera pans left with the riders."),
        index_data=tuple(encode_indices(m, MODEL) for m in sample_maps()),
        extras=extras,
    )


def sample_bytes() -> bytes:
    from m3cvc_jax.codec.bitstream import pack

    return pack(sample_stream(extras=(ExtraSection(7, b"cmvc-weights"),)))
