"""Video clips synthesised from one photograph: a virtual camera moving smoothly across it.

A path is a start and an end view (centre, height of the crop as a fraction of the image's short side,
rotation) drawn from a numpy Generator; the frames in between follow a smoothstep (zero velocity at both
ends, so a pan starts and stops like a real one). Each frame is the rotated crop, resampled from a copy of
the photo shrunk to about the crop's scale first, so a crop far larger than the output is antialiased
rather than aliased.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class View:
    cx: float  # centre, pixels of the source image
    cy: float
    height: float  # crop height, pixels of the source image (its width follows the output aspect)
    angle: float  # radians, counter-clockwise


@dataclasses.dataclass(frozen=True)
class PathConfig:
    min_scale: float = 0.3  # crop height / largest crop height at the output aspect
    max_scale: float = 0.95
    max_zoom: float = 1.6  # end scale / start scale (or its inverse), at most
    max_angle_deg: float = 4.0  # |rotation| of either end view
    max_travel: float = 0.35  # centre travel, as a fraction of the image's short side, at most


def _fit(view: View, aspect: float, src_w: int, src_h: int) -> View:
    """The view moved (and, when it cannot fit, shrunk) so its rotated rectangle lies in the image."""
    c, s = abs(math.cos(view.angle)), abs(math.sin(view.angle))
    h = view.height
    w = h * aspect
    half_w, half_h = (w * c + h * s) / 2, (w * s + h * c) / 2
    shrink = min(1.0, src_w / 2 / half_w, src_h / 2 / half_h)
    h, half_w, half_h = h * shrink, half_w * shrink, half_h * shrink
    cx = min(max(view.cx, half_w), src_w - half_w)
    cy = min(max(view.cy, half_h), src_h - half_h)
    return View(cx, cy, h, view.angle)


def random_path(rng: np.random.Generator, src_w: int, src_h: int, aspect: float,
                cfg: PathConfig = PathConfig()) -> tuple[View, View]:
    """(start, end) views of one camera move across a `src_w` x `src_h` image."""
    largest = min(src_h, src_w / aspect)
    s0 = rng.uniform(cfg.min_scale, cfg.max_scale)
    s1 = float(np.clip(s0 * math.exp(rng.uniform(-1, 1) * math.log(cfg.max_zoom)), cfg.min_scale, cfg.max_scale))
    a0, a1 = np.radians(rng.uniform(-cfg.max_angle_deg, cfg.max_angle_deg, 2))
    start = _fit(View(rng.uniform(0, src_w), rng.uniform(0, src_h), s0 * largest, float(a0)), aspect, src_w, src_h)
    travel = rng.uniform(0, cfg.max_travel) * min(src_w, src_h)
    heading = rng.uniform(0, 2 * math.pi)
    end = View(start.cx + travel * math.cos(heading), start.cy + travel * math.sin(heading), s1 * largest, float(a1))
    return start, _fit(end, aspect, src_w, src_h)


def interpolate(start: View, end: View, num_frames: int, aspect: float, src_w: int, src_h: int) -> list[View]:
    """`num_frames` views from `start` to `end` along a smoothstep; the zoom is geometric (constant speed
    in log scale, as a real zoom looks)."""
    views = []
    for i in range(num_frames):
        u = i / max(num_frames - 1, 1)
        e = u * u * (3 - 2 * u)
        h = start.height * (end.height / start.height) ** e
        v = View(start.cx + e * (end.cx - start.cx), start.cy + e * (end.cy - start.cy), h,
                 start.angle + e * (end.angle - start.angle))
        views.append(_fit(v, aspect, src_w, src_h))
    return views


def working_copy(path: str, side: int) -> Image.Image:
    """The photo at `path` as RGB (alpha composited on mid grey), shrunk (never enlarged) so its short side
    is `side`: views are cut from this copy, so a large photo is decoded and filtered once."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (128, 128, 128, 255)), rgba)
        im = im.convert("RGB")
    f = side / min(im.size)
    if f < 1:
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.LANCZOS)
    return im


def render(image: Image.Image, view: View, width: int, height: int) -> np.ndarray:
    """uint8 `(height, width, 3)`: the view's rotated crop of `image` (RGB) at the output size."""
    scale = height / view.height  # output pixels per source pixel
    c, s = math.cos(view.angle), math.sin(view.angle)
    w_src = view.height * width / height
    half_w = (w_src * abs(c) + view.height * abs(s)) / 2 + 2
    half_h = (w_src * abs(s) + view.height * abs(c)) / 2 + 2
    left = max(0, math.floor(view.cx - half_w))
    top = max(0, math.floor(view.cy - half_h))
    right = min(image.width, math.ceil(view.cx + half_w))
    bottom = min(image.height, math.ceil(view.cy + half_h))
    region = image.crop((left, top, right, bottom))
    rw, rh = max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale))
    region = region.resize((rw, rh), Image.Resampling.BICUBIC)  # antialiased when shrinking
    sx, sy = rw / (right - left), rh / (bottom - top)
    # Output pixel centre (x + .5, y + .5) -> region pixel: rotate about the view centre.
    ccx, ccy = (view.cx - left) * sx, (view.cy - top) * sy
    ox, oy = width / 2, height / 2
    a, b = c * sx / scale, -s * sx / scale
    d, e = s * sy / scale, c * sy / scale
    coeffs = (a, b, ccx - a * ox - b * oy, d, e, ccy - d * ox - e * oy)
    out = region.transform((width, height), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BICUBIC)
    return np.asarray(out.convert("RGB"))


def camera_clip(image: Image.Image, rng: np.random.Generator, *, width: int, height: int, num_frames: int,
                cfg: PathConfig = PathConfig()) -> tuple[np.ndarray, tuple[View, View]]:
    """uint8 `(num_frames, height, width, 3)` frames of one random camera move, and its end views."""
    aspect = width / height
    start, end = random_path(rng, image.width, image.height, aspect, cfg)
    views = interpolate(start, end, num_frames, aspect, image.width, image.height)
    return np.stack([render(image, v, width, height) for v in views]), (start, end)
