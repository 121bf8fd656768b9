"""The ``caption`` stage: the offline default captioner on real clips, and the VLM backend
on a tiny randomly initialised LLaVA built offline in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.tasks._stage_clips import (
    FPS,
    W,
    camera,
    encode,
    fresh,
    photo,
    put_text,
    still_with_noise,
)
from worldmill.config import StageSpec
from worldmill.media import ClipView
from worldmill.records import Clip
from worldmill.stages import load_stage
from worldmill.tasks import caption, filter_text

N = int(3 * FPS)  # 3 s clips
SPEED = 0.12 * W / FPS  # px per frame: 12 % of the frame width per second


def sky(seed: int = 0) -> np.ndarray:
    """A 600x1000 blue sky with white clouds, ``(H, W, 3)`` uint8 RGB."""
    rng = np.random.default_rng(seed)
    img = np.zeros((600, 1000, 3), np.uint8)
    img[:] = (30, 90, 210)
    for _ in range(15):
        c = (int(rng.integers(0, 1000)), int(rng.integers(0, 600)))
        axes = (int(rng.integers(30, 90)), int(rng.integers(15, 40)))
        cv2.ellipse(img, c, axes, 0, 0, 360, (245, 245, 250), -1)
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, tuple[Clip, ClipView]]:
    d = tmp_path_factory.mktemp("caption_clips")
    astro = photo("astronaut")
    specs = {
        "pan_left": camera(astro, N, 300, 250, vx=-SPEED),  # window moves left
        "pan_right": camera(astro, N, 100, 250, vx=SPEED),
        "tilt_up": camera(astro, N, 200, 400, vy=-SPEED),
        "zoom_in": camera(astro, N, 200, 250, zoom_rate=0.006),
        "sky_pan": camera(sky(), N, 500, 200, vx=-SPEED),
        "face": still_with_noise(photo("astronaut", 320), N, sigma=2.0),
        "text": put_text(camera(photo("coffee"), N, 100, 150, vx=SPEED), "SALE"),
    }
    return {name: encode(d / f"{name}.mp4", frames) for name, frames in specs.items()}


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("pan_left", "pan to the left"),
        ("pan_right", "pan to the right"),
        ("tilt_up", "tilt up"),
        ("zoom_in", "zoom in"),
    ],
)
def test_default_caption_names_the_camera_motion(clips, name, phrase):
    clip = caption.run(*fresh(*clips[name]))
    assert phrase in clip.caption, clip.caption
    assert clip.extra["camera_motion"] == name
    assert clip.extra["caption_backend"] == "default"
    assert clip.caption[0].isupper() and clip.caption.endswith(".")


def test_pan_speed_is_measured(clips):
    clip = caption.run(*fresh(*clips["pan_left"]))
    assert clip.extra["camera_speed"] == pytest.approx(0.12, rel=0.15)
    assert "steady pan" in clip.caption


def test_static_face_clip(clips):
    clip = caption.run(*fresh(*clips["face"]))
    assert clip.extra["camera_motion"] == "static"
    assert clip.extra["n_faces"] >= 1
    assert clip.caption.startswith("A static shot") and "face" in clip.caption, clip.caption


def test_colours_are_named(clips):
    clip = caption.run(*fresh(*clips["sky_pan"]))
    colours = str(clip.extra["colors"]).split(",")
    assert colours[0] == "blue" and "white" in colours, colours
    assert "dominated by blue and white" in clip.caption
    assert "no people" in clip.caption and clip.extra["n_people"] == 0
    assert "On-screen text" not in clip.caption


def test_caption_mentions_the_text_it_reads(clips):
    clip, view = fresh(*clips["text"])
    caption.run(clip, view)  # no text stage ran: the captioner runs OCR itself
    assert "On-screen text reads 'SALE'" in clip.caption, clip.caption
    assert clip.extra["ocr_text"] == "SALE"
    clip, view = fresh(*clips["text"])
    filter_text.run(clip, view)  # rejects the clip (text) and records the OCR
    clip.extra["ocr_text"] = "SALE 50%"  # proves the captioner reuses the text stage's output
    caption.run(clip, view, only_kept=False)
    assert "On-screen text reads 'SALE 50%'" in clip.caption


def test_only_kept_skips_rejected_clips(clips):
    clip, view = fresh(*clips["pan_left"])
    clip.reject("motion")
    assert caption.run(clip, view).caption == ""
    assert "camera_motion" not in clip.extra
    assert caption.run(clip, view, only_kept=False).caption.startswith("A ")


def test_classify_camera_conventions():
    still = {"dx": 0.001, "dy": -0.002, "zoom": 0.005}
    assert caption.classify_camera(still)[0] == "static"
    assert caption.classify_camera({"dx": 0.0, "dy": -0.1, "zoom": 0.0})[0] == "tilt_down"
    assert caption.classify_camera({"dx": 0.01, "dy": 0.0, "zoom": -0.2}) == ("zoom_out", 0.1)
    assert caption.color_name(np.array([250, 250, 250])) == "white"
    assert caption.color_name(np.array([20, 160, 40])) == "green"
    assert caption.color_name(np.array([10, 10, 12])) == "black"


def test_unknown_backend_and_missing_model_are_recorded_errors(clips):
    for params, needle in [
        ({"backend": "nope"}, "unknown caption backend"),
        ({"backend": "vlm", "model_path": "/nonexistent/model"}, "not a local folder"),
    ]:
        stage = load_stage(StageSpec(name="caption", params=params))
        clip = stage(*fresh(*clips["pan_left"]))
        assert clip.reject_reason == "caption" and needle in clip.errors["caption"]


# ----------------------------------------------------------------------------- VLM backend


def build_tiny_llava(path: Path) -> Path:
    """Save a tiny random LLaVA (CLIP vision tower + Llama decoder, hidden size 32, one layer
    each), a byte-level BPE tokenizer trained on a few sentences, a PIL CLIP image processor
    and a chat template to ``path``: everything ``AutoProcessor`` and
    ``AutoModelForImageTextToText`` need, built without any network access.

    Why LLaVA and not Qwen2-VL: in transformers 5 the Qwen2-VL processor always builds a
    video processor, which needs torchvision (not installed here); LLaVA's processor needs
    only an image processor and a tokenizer. The stage code itself is architecture-generic.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<s>", "</s>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["a slow pan across a city street", "describe the clip in one sentence"]
    tok.train_from_iterator(corpus * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    template = (
        "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
        ),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token
        chat_template=template,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            image_size=28, patch_size=14, projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )  # fmt: skip
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_vlm_backend_captions_with_a_local_model(clips, tmp_path):
    model_dir = build_tiny_llava(tmp_path / "tiny-llava")
    params = {"backend": "vlm", "model_path": str(model_dir), "max_new_tokens": 8, "n_frames": 2}
    clip, view = fresh(*clips["pan_left"])
    stage = load_stage(StageSpec(name="caption", params=params))
    clip = stage(clip, view)
    assert not clip.errors, clip.errors
    # The caption is the model's greedy answer for this clip's keyframes (n_frames of them,
    # at the stage's frame width), special tokens stripped, whitespace normalised.
    frames = view.keyframes(n=2, width=caption.ANALYSIS_WIDTH)
    text, n_new = caption.vlm_caption(frames, str(model_dir), max_new_tokens=8)
    assert (clip.caption, clip.extra["caption_tokens"]) == (text, n_new)
    assert clip.caption == " ".join(clip.caption.split())
    _, processor = caption.load_vlm(str(model_dir))
    assert not any(t in clip.caption for t in processor.tokenizer.all_special_tokens if t)
    assert 1 <= clip.extra["caption_tokens"] <= 8  # random weights: gibberish, but generated
    assert clip.extra["caption_backend"] == "vlm"
    assert clip.extra["caption_model"] == "tiny-llava"
    # The loaded model is cached per process: a second clip reuses it.
    model, processor = caption.load_vlm(str(model_dir))
    assert caption.load_vlm(str(model_dir))[0] is model
    again = caption.run(*fresh(*clips["pan_left"]), **params)
    assert again.caption == clip.caption  # greedy decoding is deterministic
