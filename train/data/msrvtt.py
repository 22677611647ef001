"""TFDS builder `msrvtt`: MSR-VTT from a manual download dir -> keyframes + the dataset's captions.

Manual dir layout (as distributed): the videos `video<N>.mp4` anywhere below it (e.g. `TrainValVideo/`,
`TestVideo/`, `videos/all/`), and an annotation JSON with `videos` (`video_id`, `split`) and `sentences`
(`video_id`, `caption`): `train_val_videodatainfo.json`, `test_videodatainfo.json` or `MSRVTT_data.json`.
Splits: train, validate, test as the annotation says. Each keyframe gets its video's first caption.
"""

from __future__ import annotations

import json
import os

import tensorflow_datasets as tfds

from m3cvc_jax.errors import ConfigError
from train.data import common, frames
from train.data.common import KeyframeConfig

ANNOTATIONS = ("train_val_videodatainfo.json", "test_videodatainfo.json", "MSRVTT_data.json")


def read_annotations(root: str) -> tuple[dict[str, str], dict[str, str]]:
    """(video_id -> split, video_id -> first caption) over every annotation file found below `root`."""
    splits, captions, found = {}, {}, False
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name not in ANNOTATIONS:
                continue
            found = True
            with open(os.path.join(dirpath, name)) as f:
                data = json.load(f)
            for v in data.get("videos", []):
                splits[v["video_id"]] = v.get("split", "train")
            for s in data.get("sentences", []):
                captions.setdefault(s["video_id"], s["caption"])
    if not found:
        raise ConfigError(f"no MSR-VTT annotation ({', '.join(ANNOTATIONS)}) under {root}")
    return splits, captions


class Msrvtt(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    # tfds looks for checksum files next to the code through importlib_resources, a package it does not
    # install; a builder with no downloads has no checksums.
    code_path = None
    BUILDER_CONFIGS = [KeyframeConfig()]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Download MSR-VTT (videos + annotation JSON) and pass its folder as manual dir."

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=common.features(self.builder_config),
            description="MSR-VTT keyframes with their captions.",
            homepage="https://www.microsoft.com/en-us/research/publication/msr-vtt-a-large-video-description-dataset-for-bridging-video-and-language/",
        )

    def _split_generators(self, dl_manager):
        root = str(dl_manager.manual_dir)
        splits, captions = read_annotations(root)
        by_split: dict[str, list[str]] = {}
        for path in frames.list_videos(root):
            vid = os.path.splitext(os.path.basename(path))[0]
            if vid in splits:
                by_split.setdefault(splits[vid], []).append(path)
        if not by_split:
            raise ConfigError(f"none of the annotated MSR-VTT videos is under {root}")

        def caption(path: str, frame: int) -> str:
            return captions.get(os.path.splitext(os.path.basename(path))[0], "")

        return {split: common.examples(self.builder_config, paths, root, caption) for split, paths in by_split.items()}

    def _generate_examples(self):  # pragma: no cover
        raise NotImplementedError
