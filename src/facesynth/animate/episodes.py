"""Meta-learning episodes from prepared clips: K frames of one video for the embedder, one more as target.

Every frame and its landmark drawing are decoded once, at the model's resolution, into memory
(64x64: ~25 kB a frame for both), so sampling costs nothing next to a training step.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..data.video import draw_landmarks, load_clips
from ..errors import FacesynthError


def to_unit(x_u8: torch.Tensor) -> torch.Tensor:
    return x_u8.float() / 127.5 - 1


def frame_at(frame: np.ndarray, resolution: int) -> np.ndarray:
    if frame.shape[0] == resolution:
        return frame
    return np.asarray(Image.fromarray(frame).resize((resolution, resolution), Image.LANCZOS))


def rescale_landmarks(landmarks: np.ndarray, source_resolution: int, resolution: int) -> np.ndarray:
    """Pixel coordinates in a source_resolution image -> the same points in a resized one (centres on centres)."""
    return (np.asarray(landmarks, np.float64) + 0.5) * (resolution / source_resolution) - 0.5


def landmark_image(landmarks: np.ndarray, source_resolution: int, resolution: int) -> np.ndarray:
    return draw_landmarks(rescale_landmarks(landmarks, source_resolution, resolution), resolution)


@dataclass
class VideoFrames:
    """One clip at the model's resolution: uint8 frames and landmark drawings [N, 3, R, R], landmarks [N, 68, 2]."""

    name: str
    frames: torch.Tensor
    drawings: torch.Tensor
    landmarks: np.ndarray  # at the model's resolution
    fps: float


def load_videos(path, resolution: int, include=None, exclude=(), quiet: bool = False) -> list[VideoFrames]:
    clips = load_clips(path)
    names = [c.name for c in clips]
    unknown = [n for n in list(include or []) + list(exclude) if n not in names]
    if unknown:
        raise FacesynthError(f"{path}: no prepared clip named {', '.join(unknown)} (have: {', '.join(names)})")
    chosen = [c for c in clips if (include is None or c.name in include) and c.name not in exclude]
    if not chosen:
        raise FacesynthError(f"{path}: no clips left to use")
    videos = []
    for clip in tqdm(chosen, desc="loading clips", unit="clip", disable=quiet, file=sys.stderr):
        n = len(clip)
        frames = np.stack([frame_at(clip.frame(i), resolution) for i in range(n)])
        drawings = np.stack([landmark_image(clip.landmarks[i], clip.resolution, resolution) for i in range(n)])
        videos.append(VideoFrames(clip.name, torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(),
                                  torch.from_numpy(drawings).permute(0, 3, 1, 2).contiguous(),
                                  rescale_landmarks(clip.landmarks, clip.resolution, resolution), float(clip.fps)))
    return videos


class EpisodeSampler:
    """Draws episodes with its own torch.Generator (saved with the run, so resume is exact)."""

    def __init__(self, videos: list[VideoFrames], shots: int, seed: int):
        short = [v.name for v in videos if len(v.frames) < shots + 1]
        if short:
            raise FacesynthError(f"clips with fewer than K+1 = {shots + 1} frames: {', '.join(short)}")
        self.videos, self.shots = videos, shots
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch: int, rank: int = 0, world_size: int = 1) -> dict[str, torch.Tensor]:
        """``batch`` episodes; with data-parallel ranks, this rank's every ``world_size``-th of them.

        Every rank draws the choices of the whole batch, so the generator stays the same on all of them.
        """
        g = self.generator
        video = torch.randint(len(self.videos), (batch,), generator=g)
        frames, drawings, targets, target_drawings, landmarks = [], [], [], [], []
        for j, v in enumerate(video.tolist()):
            clip = self.videos[v]
            pick = torch.randperm(len(clip.frames), generator=g)[:self.shots + 1]
            if j % world_size != rank:
                continue
            frames.append(clip.frames[pick[:-1]])
            drawings.append(clip.drawings[pick[:-1]])
            targets.append(clip.frames[pick[-1]])
            target_drawings.append(clip.drawings[pick[-1]])
            landmarks.append(torch.from_numpy(np.asarray(clip.landmarks[pick.numpy()], np.float32)))
        landmarks = torch.stack(landmarks)
        return {"frames": to_unit(torch.stack(frames)), "drawings": to_unit(torch.stack(drawings)),
                "target": to_unit(torch.stack(targets)), "target_drawing": to_unit(torch.stack(target_drawings)),
                "landmarks": landmarks[:, :-1], "target_landmarks": landmarks[:, -1],
                "video": video[rank::world_size]}
