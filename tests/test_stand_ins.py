"""What `encode` and `inspect` say a run replaced by a stand-in."""

from types import SimpleNamespace

from m3cvc_jax.commands import stand_ins
from m3cvc_jax.pipelines.settings import load_config


def test_paper_settings_use_no_stand_in():
    assert stand_ins.from_config(load_config("paper")) == []


def test_demo_names_its_weights_keyframes_and_missing_texts():
    lines = stand_ins.from_config(load_config("demo"))
    assert "docs/demo.md" in lines[0]
    assert any("fixed interval" in s and "every 15 frames" in s for s in lines)
    assert any("no texts" in s for s in lines)


def test_classical_flow_and_fixed_texts_are_named():
    lines = stand_ins.from_config(load_config("paper", ["keyframes.flow_model=classical", "dialogue.describer=fixed",
                                                        "dialogue.texts=t.json"]))
    assert lines == ["Lucas-Kanade optical flow instead of RAFT for the motion term",
                     "texts read from t.json, not written by Qwen2-VL"]


def test_stream_stand_ins_follow_the_header_and_texts():
    def stream(preset, method, texts):
        return SimpleNamespace(header=SimpleNamespace(preset=preset, keyframe_method=method),
                               keyframe_texts=texts, clip_texts=[""])

    assert stand_ins.from_stream(stream("paper", "m3cvc", ["a red car", ""])) == []
    assert stand_ins.from_stream(stream("tiny", "fixed", ["", ""])) == [
        stand_ins.WEIGHTS["tiny"], stand_ins.FIXED_KEYFRAMES, stand_ins.NO_TEXTS]
