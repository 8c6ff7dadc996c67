"""The request parameters' ranges, defined once: the API validates with them, /docs shows them, /api/info
reports them and the page reads them from there (its slider, its seed fields, the links it accepts).

Seeds get one check and one message wherever they appear (``seed`` in /api/face, ``source``, ``style``,
``a``, ``b`` elsewhere), so a number out of range reads the same in every answer.
"""

from __future__ import annotations

import re

from pydantic_core import PydanticCustomError

from ..config import SEED_MAX, SEED_MIN

PSI_MIN, PSI_MAX = -1.0, 2.0  # truncation: 0 the average face, 1 none; beyond 1 or below 0 it extrapolates
DEFAULT_PSI = 0.7
SIZE_MIN, SIZE_MAX = 16, 1024  # height of one image (one frame of a strip), in pixels
FRAMES_MIN, FRAMES_MAX = 2, 16
DEFAULT_FRAMES = 8

SEED_RANGE = f"seeds are whole numbers from {SEED_MIN} to {SEED_MAX}"
PHOTO_PREFIX = "photo:"
_INTEGER = re.compile(r"[+-]?\d+")


def ranges() -> dict[str, dict[str, float]]:
    """Each number parameter's inclusive range, as /api/info reports it."""
    return {"seed": {"min": SEED_MIN, "max": SEED_MAX}, "psi": {"min": PSI_MIN, "max": PSI_MAX},
            "size": {"min": SIZE_MIN, "max": SIZE_MAX}, "frames": {"min": FRAMES_MIN, "max": FRAMES_MAX}}


def check_seed(seed: int) -> int:
    if not SEED_MIN <= seed <= SEED_MAX:
        raise PydanticCustomError("seed_range", "{seed} is out of range: " + SEED_RANGE, {"seed": seed})
    return seed


def parse_face(ref: str) -> int | str:
    """A face named in a request: a seed (an int, range-checked as ``check_seed`` does) or 'photo:<job id>'."""
    ref = ref.strip()
    if _INTEGER.fullmatch(ref):
        return check_seed(int(ref))
    if ref.startswith(PHOTO_PREFIX):
        return ref
    raise PydanticCustomError("face_ref", "'{ref}' is neither a seed (" + SEED_RANGE + ") nor photo:<job id>",
                              {"ref": ref})
