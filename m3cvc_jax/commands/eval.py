"""`m3cvc eval DATASET --codecs ours,x264,x265 --out DIR`: rate-distortion evaluation against the anchors.

DATASET is a folder of videos, one video, or `uvg`, `mcl-jcv`, `hevc-b`, `hevc-c` under `--data-root` (see
`m3cvc_jax/eval/datasets.py` for the expected layout). Frames are cropped and resized to the preset's
size (demo and tiny 128x80, paper 512x320) unless --width/--height say otherwise. Writes OUT/results.csv,
curves.csv, bdrate.csv, summary.md, rd_<metric>.png, grid_<sequence>.png and report.html (open it from disk);
re-running resumes from results.csv.
"""

from __future__ import annotations

import math
import os
import sys

from m3cvc_jax.commands import runtime
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.pipelines import presets as codec_configs
from m3cvc_jax.pipelines.presets import DEFAULT_PRESET
from m3cvc_jax.eval import vmaf

FRAME_METRICS = ("psnr", "ms_ssim", "vmaf", "lpips", "dists", "clip_sim")
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="rate-distortion evaluation of codecs on a dataset", description=DESCRIPTION)
    p.add_argument("dataset", metavar="DATASET", help="folder, video file, or uvg | mcl-jcv | hevc-b | hevc-c")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--codecs", default="x264,x265",
                   help="comma-separated among x264, x265, svtav1, vvenc, vtm and ours; default x264,x265")
    p.add_argument("--anchor", default=None, help="BD-rate anchor (default: vtm, vvenc, x265 or x264, if evaluated)")
    p.add_argument("--data-root", default=None, help="root of the manual downloads (default: $M3CVC_DATA)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated among psnr, ms_ssim, vmaf, lpips, dists, clip_sim and the VBench "
                        "dimensions temporal_flickering, subject_consistency, background_consistency, "
                        "aesthetic_quality (default: psnr, ms_ssim, vmaf, and lpips / dists / clip_sim when their "
                        "weights are given)")
    p.add_argument("--lpips-weights", default=None, help="converted LPIPS checkpoint (python -m convert_weights lpips)")
    p.add_argument("--dists-weights", default=None, help="converted DISTS checkpoint (python -m convert_weights dists)")
    p.add_argument("--clip-weights", default=None,
                   help="converted CLIP checkpoint (python -m convert_weights clip); VBench's background "
                        "consistency uses ViT-B/32")
    p.add_argument("--dino-weights", default=None,
                   help="converted DINO ViT-B/16 (python -m convert_weights dino), for subject_consistency")
    p.add_argument("--aesthetic-weights", default=None, metavar="HEAD,CLIP",
                   help="converted LAION aesthetic head and CLIP ViT-L/14 checkpoints (python -m convert_weights "
                        "aesthetic / clip), for aesthetic_quality")
    p.add_argument("--rate-points", action="append", default=[], metavar="CODEC=V1,V2",
                   help="override a codec's rate points (QPs for the anchors); repeatable")
    p.add_argument("--width", type=int, default=None, help="frame width (default: the preset's, e.g. demo 128)")
    p.add_argument("--height", type=int, default=None, help="frame height (default: the preset's, e.g. demo 80)")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames per sequence")
    p.add_argument("--start-time", type=float, default=0.0)
    p.add_argument("--vtm", default=None, help="path of VTM's EncoderApp (enables codec vtm)")
    p.add_argument("--vtm-cfg", default=None, help="VTM low-delay P cfg (encoder_lowdelay_P_vtm.cfg)")
    p.add_argument("--preset", default=None, help="preset of codec 'ours'")
    p.add_argument("--weights", default=None, help="weights folder of codec 'ours'")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="config override for codec 'ours'; repeatable")
    p.add_argument("--ablation", default=None, metavar="CONFIG",
                   help="run the ablation rows of CONFIG (e.g. configs/ablations/table1.py) as codecs 'ours[row]'")
    p.add_argument("--per-device", type=int, default=4, help="frames per device in one metric batch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from m3cvc_jax.eval import ablations, html_report, report, runner, sharding
    from m3cvc_jax.eval.codecs import make_codec
    from m3cvc_jax.eval.datasets import list_sequences
    from m3cvc_jax.io.video import PreprocessConfig

    runtime.setup()  # the persistent compilation cache: "ours" recompiles nothing on a repeated run
    sharding.maybe_initialize_distributed()
    _check_numbers(args)
    skipped: list[str] = []
    label, sequences = list_sequences(args.dataset, args.data_root, skipped)
    width, height, size_from = _frame_size(args)
    pre = PreprocessConfig(width=width, height=height, fps=args.fps, start_time=args.start_time,
                           max_frames=args.max_frames)
    rate_points = runner.parse_rate_points(args.rate_points)
    options = dict(vtm=args.vtm, vtm_cfg=args.vtm_cfg, preset=args.preset, weights=args.weights,
                   overrides=tuple(args.overrides))
    names = [c.strip() for c in args.codecs.split(",") if c.strip()]
    if not names:
        raise ConfigError("--codecs is empty")
    codecs = {}
    for name in names:
        codecs[name] = make_codec(name, rate_points=rate_points.get(name), **options)
    if args.ablation:
        # A row takes its own `ours[row]=...` rate points if given, else those given for `ours`.
        for row_name, codec in ablations.ablation_codecs(args.ablation, rate_points=rate_points.get("ours"),
                                                         row_rate_points=rate_points, **options).items():
            codecs[row_name] = codec

    metric_names, dropped = _metric_names(args)
    metric_names, small = runner.usable_metrics(metric_names, height, width)
    dropped += small
    batch = _batch_metrics(metric_names, args)
    settings = runner.EvalSettings(out=args.out, metrics=metric_names, preprocess=pre, rate_points=rate_points,
                                   progress=not args.no_progress)
    anchor = args.anchor or next((a for a in ("vtm", "vvenc", "x265", "x264") if a in codecs), None)
    if args.anchor and args.anchor not in codecs:
        raise ConfigError(f"--anchor {args.anchor} is not among the evaluated codecs ({', '.join(codecs)})")
    # Everything is checked: now say what will run (an error above stays the only line on stderr).
    for note in skipped:
        print(f"skipped {note}", file=sys.stderr)
    if size_from != "preset" and any(c == "ours" or c.startswith("ours[") for c in codecs):
        pw, ph = _preset_size(size_from)
        print(f"m3cvc: warning: frames {width}x{height} differ from preset {size_from}'s {pw}x{ph}: codec ours "
              "runs its weights off the size they were made for (slower, and worse than it would be)", file=sys.stderr)
    origin = "the preset's size" if size_from == "preset" else "--width/--height"
    print(f"frames {width}x{height} ({origin}), {args.fps:g} fps", file=sys.stderr)
    rows = runner.evaluate(label, sequences, codecs, batch, settings)
    notes = [f"metric dropped: {d}" for d in dropped] + [f"not a video, skipped: {s}" for s in skipped]
    written = report.write_report(args.out, rows, anchor=anchor, dataset=label, notes=notes)
    run_settings = _run_settings(args, label, sequences, codecs, metric_names, anchor, width, height, size_from)
    written.update(html_report.write_html(args.out, rows, anchor=anchor, dataset=label, notes=notes,
                                          settings=run_settings))
    print(f"evaluated {len(sequences)} sequence(s) x {len(codecs)} codec(s): {len(rows)} points")
    for kind, path in written.items():
        print(f"{kind:10s} {os.path.relpath(path)}")
    if "html" in written:
        print(f"open the report: file://{os.path.abspath(written['html'])}")
    return 0


def _check_numbers(args) -> None:
    for name in ("width", "height", "max_frames", "per_device"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if not (math.isfinite(args.fps) and args.fps > 0):
        raise ConfigError(f"--fps must be a positive number, got {args.fps}")
    if not (math.isfinite(args.start_time) and args.start_time >= 0):
        raise ConfigError(f"--start-time must be >= 0 seconds, got {args.start_time}")
    if (args.width is None) != (args.height is None):
        raise ConfigError("give both --width and --height, or neither (default: the preset's size)")


def _preset_size(preset: str) -> tuple[int, int]:
    if preset not in codec_configs.PRESETS:
        raise ConfigError(f"--preset {preset!r}: one of {', '.join(codec_configs.PRESETS)}")
    video = codec_configs.get_config(preset).video
    return int(video.width), int(video.height)


def _frame_size(args) -> tuple[int, int, str]:
    """(width, height, "preset" if they are the preset's size, else the preset's name)."""
    preset = args.preset or DEFAULT_PRESET
    pw, ph = _preset_size(preset)
    if args.width is None:
        return pw, ph, "preset"
    return args.width, args.height, "preset" if (args.width, args.height) == (pw, ph) else preset


def _run_settings(args, label, sequences, codecs, metric_names, anchor, width, height, size_from) -> dict:
    """What the report lists under "settings" (and settings.json keeps): enough to run it again."""
    return {
        "command": _command(args),
        "dataset": label, "sequences": [s.name for s in sequences],
        "frames": f"{width}x{height}" + (" (the preset's size)" if size_from == "preset" else ""),
        "fps": args.fps, "start_time": args.start_time, "max_frames": args.max_frames,
        "codecs": {name: [str(rp) for rp in c.rate_points] for name, c in codecs.items()},
        "rate_point_overrides": args.rate_points, "anchor": anchor, "metrics": metric_names,
        "vmaf_model": vmaf.MODEL if "vmaf" in metric_names else None,
        "preset": args.preset or DEFAULT_PRESET, "weights": args.weights, "set": args.overrides,
        "ablation": args.ablation,
    }


def _command(args) -> str:
    """The run as one `m3cvc eval` command line (the options that were given)."""
    import shlex

    words = ["m3cvc", "eval", args.dataset, "--out", args.out, "--codecs", args.codecs]
    for flag in ("anchor", "data_root", "metrics", "lpips_weights", "dists_weights", "clip_weights", "dino_weights",
                 "aesthetic_weights", "width",
                 "height", "max_frames", "vtm", "vtm_cfg", "preset", "weights", "ablation"):
        value = getattr(args, flag)
        if value is not None:
            words += [f"--{flag.replace('_', '-')}", str(value)]
    words += ["--fps", f"{args.fps:g}"] + (["--start-time", f"{args.start_time:g}"] if args.start_time else [])
    for spec in args.rate_points:
        words += ["--rate-points", spec]
    for override in args.overrides:
        words += ["--set", override]
    return " ".join(shlex.quote(w) for w in words)


def _metric_names(args) -> tuple[list[str], list[str]]:
    """(metrics to compute, dropped defaults with the reason)."""
    if args.metrics:
        names = [m.strip() for m in args.metrics.split(",") if m.strip()]
        from m3cvc_jax.eval.video_metrics import VBENCH_METRICS

        known = FRAME_METRICS + VBENCH_METRICS
        for n in names:
            if n not in known:
                raise ConfigError(f"unknown metric {n!r}; one of {', '.join(known)}")
        if "lpips" in names and not args.lpips_weights:
            raise ConfigError("metric lpips needs --lpips-weights DIR (python -m convert_weights lpips ...)")
        if "dists" in names and not args.dists_weights:
            raise ConfigError("metric dists needs --dists-weights DIR (python -m convert_weights dists ...)")
        for n, need, option, family in (("clip_sim", args.clip_weights, "--clip-weights DIR", "clip"),
                                        ("background_consistency", args.clip_weights, "--clip-weights DIR", "clip"),
                                        ("subject_consistency", args.dino_weights, "--dino-weights DIR", "dino"),
                                        ("aesthetic_quality", args.aesthetic_weights, "--aesthetic-weights HEAD,CLIP",
                                         "aesthetic and clip")):
            if n in names and not need:
                raise ConfigError(f"metric {n} needs {option} (python -m convert_weights {family} ...)")
        if "vmaf" in names and not vmaf.available():
            raise ConfigError("metric vmaf needs an ffmpeg with libvmaf (imageio-ffmpeg's has it; check M3CVC_FFMPEG)")
        return names, []
    names, dropped = ["psnr", "ms_ssim"], []
    if vmaf.available():
        names.append("vmaf")
    else:
        dropped.append("vmaf: this ffmpeg has no libvmaf (imageio-ffmpeg's has it; check M3CVC_FFMPEG)")
    if args.lpips_weights:
        names.append("lpips")
    if args.dists_weights:
        names.append("dists")
    if args.clip_weights:
        names.append("clip_sim")
    return names, dropped


def _batch_metrics(names, args):
    """The runner's metric call: frame metrics sharded over devices, plus the VBench video dimensions."""
    from m3cvc_jax.eval import metrics, sharding
    from m3cvc_jax.eval.video_metrics import VBENCH_METRICS, VideoMetrics, with_video_metrics

    jax_frame = [n for n in names if n not in VBENCH_METRICS and n != "vmaf"]
    video = [n for n in names if n in VBENCH_METRICS]
    batch = sharding.BatchMetrics(_metric_objects(jax_frame, args), per_device=args.per_device) if jax_frame else None
    if "vmaf" in names:
        batch = vmaf.WithVmaf(batch)
    if not video:
        return batch
    models = {}
    if "subject_consistency" in video:
        models["dino"] = _load_dino(args.dino_weights)
    if "background_consistency" in video:
        models["clip"] = metrics.load_clip_model(args.clip_weights)
    if "aesthetic_quality" in video:
        head_dir, sep, clip_dir = args.aesthetic_weights.partition(",")
        if not sep or not head_dir or not clip_dir:
            raise ConfigError("--aesthetic-weights takes HEAD,CLIP: the aesthetic head and the CLIP ViT-L/14 folders")
        models["aesthetic_head"] = _load_aesthetic(head_dir)
        models["aesthetic_clip"] = metrics.load_clip_model(clip_dir)
    return with_video_metrics(batch, VideoMetrics(video, **models))


def _load_dino(directory):
    from flax import nnx

    from m3cvc_jax.nn.vit import ViTConfig, ViTModel
    from m3cvc_jax.weights import assign_params, load_checkpoint

    meta, params = load_checkpoint(directory, family="dino")
    model = nnx.eval_shape(lambda: ViTModel(ViTConfig.from_dict(meta["config"]), rngs=nnx.Rngs(0)))
    assign_params(model, params, source=directory)
    return model


def _load_aesthetic(directory):
    from flax import nnx

    from m3cvc_jax.nn.aesthetic import aesthetic_head
    from m3cvc_jax.weights import assign_params, load_checkpoint

    meta, params = load_checkpoint(directory, family="aesthetic")
    head = nnx.eval_shape(lambda: aesthetic_head(meta["config"]["embed_dim"], rngs=nnx.Rngs(0)))
    assign_params(head, params, source=directory)
    return head


def _metric_objects(names, args):
    from m3cvc_jax.eval import metrics, sharding

    lp = {"lpips": metrics.load_lpips(args.lpips_weights)} if "lpips" in names else None
    clip = sharding.clip_embedder(metrics.load_clip_model(args.clip_weights)) if "clip_sim" in names else None
    dists = metrics.load_dists(args.dists_weights) if "dists" in names else None
    return sharding.default_metrics(names, lpips_models=lp, clip=clip, dists=dists)
