"""Decoders: samplers over the networks of `nn/` that rebuild pictures from what a stream carries.

`keyframe.py`: VQ index map + description -> keyframe (guided DDIM over the keyframe codec's UNet).
`video.py`: keyframe(s) + clip description -> clip (SEINE, interpolation or prediction windows).
"""
