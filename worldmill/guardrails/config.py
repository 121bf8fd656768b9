"""``Guardrails``: the one config of the pre-guard (prompt) and post-guard (frames)."""

from __future__ import annotations

from pydantic import Field, field_validator

from worldmill.config import StrictModel

# Every class NudeNet 3.4's detector reports (nudenet.nudenet.__labels; a test checks).
NUDENET_CLASSES = [
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
]

# NudeNet 3.x detector classes that make a frame NSFW (the others -- faces, covered body
# parts, feet, armpits, belly -- do not).
NSFW_CLASSES = [
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
]


class Guardrails(StrictModel):
    """Guardrails for generation, on by default (as Cosmos ships them).

    ``enabled=False`` turns both guards off; callers must take it only from an explicit
    flag (``--no-guardrails``) and write :func:`worldmill.guardrails.record` into
    ``OUT.json`` so that an unguarded sample is always labelled as such.
    """

    enabled: bool = True
    # Pre-guard on the prompt: a refused prompt exits EXIT_REFUSED (3), nothing generated.
    blocklist: bool = True  # word/phrase list in worldmill/guardrails/data/blocklist.txt
    classifier: bool = True  # logistic regression over MiniLM sentence embeddings
    threshold: float = Field(0.5, gt=0, lt=1)  # refuse when P(blocked) >= threshold
    # Post-guard on frames: faces blurred (OpenCV Haar cascades), NSFW frames withheld.
    face_blur: bool = True
    face_pad: float = Field(0.3, ge=0, le=1)  # box padding on each side, fraction of box side
    face_profile: bool = True  # also the profile cascade (both sides): ~4x the frontal cost
    face_min_px: int = Field(16, ge=8)  # smallest face side detected, px at detect_width
    detect_width: int = Field(640, ge=64)  # frames wider than this are detected downscaled
    face_temporal: int = Field(2, ge=0)  # a box also blurs this many frames before/after
    nsfw: bool = True  # NudeNet detector (ONNX shipped in the nudenet wheel)
    nsfw_threshold: float = Field(0.5, gt=0, lt=1)  # detection score that withholds a frame
    nsfw_classes: list[str] = Field(default_factory=lambda: list(NSFW_CLASSES))
    nsfw_stride: int = Field(1, ge=1)  # check every n-th frame; a hit withholds its neighbours

    @field_validator("nsfw_classes")
    @classmethod
    def _known_classes(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in NUDENET_CLASSES]
        if bad:
            raise ValueError(f"unknown NudeNet class(es) {bad}; known: {NUDENET_CLASSES}")
        return v
