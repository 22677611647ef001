"""TFDS builder `video_folder`: any folder of videos (the manual dir) -> keyframes + descriptions.

    builder = VideoFolder(config=KeyframeConfig(width=512, height=320, captions="caps.json"), data_dir=D)
    builder.download_and_prepare(file_format="array_record",
                                 download_config=tfds.download.DownloadConfig(manual_dir=VIDEOS))
    source = builder.as_data_source(split="train")   # random access, no TensorFlow

A different folder needs a different `data_dir` (the built dataset is cached there by config name).
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from train.data import common, frames, keyframe_source
from train.data.common import KeyframeConfig


class VideoFolder(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    # tfds looks for checksum files next to the code through importlib_resources, a package it does not
    # install; a builder with no downloads has no checksums.
    code_path = None
    BUILDER_CONFIGS = [KeyframeConfig()]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put any videos (mp4, avi, mov, mkv, webm, ...) in the manual dir."

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=common.features(self.builder_config),
            description="Keyframes of a folder of videos with their descriptions (M3-CVC training data).",
        )

    def _split_generators(self, dl_manager):
        root = str(dl_manager.manual_dir)
        videos = frames.list_videos(root)
        caption = keyframe_source.captions_lookup(self.builder_config.captions, root)
        return {"train": common.examples(self.builder_config, videos, root, caption)}

    def _generate_examples(self):  # pragma: no cover - _split_generators returns generators directly
        raise NotImplementedError
