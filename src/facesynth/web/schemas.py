"""The JSON the API answers with (and the shapes /docs shows)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Feature(BaseModel):
    available: bool
    reason: str | None = Field(None, description="why not, when not available")


class Driver(BaseModel):
    name: str
    url: str


class Info(BaseModel):
    model: dict = Field(description="the face generator: name, resolution, num_ws, style_groups, z_dim, framing")
    defaults: dict
    ranges: dict[str, dict[str, int | float]] = Field(description="each number parameter's inclusive range (seed, psi, "
                                                "size, frames): what the API accepts and the page offers")
    limits: dict
    features: dict[str, Feature] = Field(description="project (upload a photo) and animate (talking heads)")
    drivers: list[Driver] = Field(description="the driving clips that ship with facesynth")


class JobOut(BaseModel):
    id: str
    kind: str = Field(description="project or animate")
    state: str = Field(description="queued, running, done or failed")
    progress: float = Field(description="0 to 1")
    message: str = Field(description="what the job is doing, for people")
    queue_position: int = Field(description="queued jobs ahead of this one")
    error: str | None = None
    result: dict = Field(default_factory=dict, description="when done: what was made (and for project, the "
                         "face name to use in /api/mix and /api/interpolate)")
    result_url: str | None = None
    input_url: str | None = None
    elapsed_s: float


class Problem(BaseModel):
    detail: str = Field(description="what went wrong, in words")


class DetectOut(BaseModel):
    file: str = Field(description="the uploaded file's name")
    kind: str = Field(description="image or video")
    marked: bool = Field(description="valid Content Credentials or the watermark found: made by facesynth")
    content_credentials: dict = Field(description="present, state (Valid, Trusted, Invalid), valid, signer, claims "
                                      "(digital_source_type, generator, model_sha256, parameters), problems")
    watermark: dict = Field(description="found, payload (facesynth:MODEL_ID), z (about N(0, 1) on unmarked "
                            "pictures), chance_if_unmarked, tier, read (as is, a crop, or the mean of video frames)")
    summary: str = Field(description="the same in one line, as `facesynth detect` prints it")
