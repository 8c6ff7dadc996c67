"""What a visitor uploads, checked before any work is queued: size, that it is an image (or a video),
and that a human face is in it.  Each failure is an UploadError carrying the HTTP status and a message
meant for the visitor, naming the file by the name they gave it, never by a server path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import FacesynthError

MAX_SIDE = 1600  # photos are reduced to this before face detection: faster, and plenty for a 256-px crop


class UploadError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def check_size(data: bytes, limit_bytes: int, what: str) -> bytes:
    """An uploaded file's bytes (read up to one past the limit), or 413 past ``limit_bytes``, or 400 when empty."""
    if len(data) > limit_bytes:
        raise UploadError(413, f"{what} is larger than {limit_bytes / 2**20:.0f} MB")
    if not data:
        raise UploadError(400, f"{what} is empty (0 bytes)")
    return data


def decode_photo(data: bytes, what: str) -> np.ndarray:
    """uint8 [H, W, 3], reduced to at most MAX_SIDE on its longer side; 415 when it is no image (or a broken
    one), 422 when it declares more pixels than we decode (a decompression bomb)."""
    from ..data.images import BadImage, decode_image

    try:
        img = decode_image(data, what)
    except BadImage as e:
        if e.problem == "too_large":  # an image, but one we refuse to decode: no format would help
            raise UploadError(422, str(e)) from None
        # The reason often ends in its own parentheses: the advice follows as a clause, as for videos.
        raise UploadError(415, f"{e}; send a JPEG, PNG or WebP photo") from None
    h, w = img.shape[:2]
    if min(h, w) < 32:
        raise UploadError(422, f"{what} is too small ({w}x{h} pixels)")
    if max(h, w) > MAX_SIDE:
        scale = MAX_SIDE / max(h, w)
        img = np.asarray(Image.fromarray(img).resize((round(w * scale), round(h * scale)), Image.LANCZOS))
    return img


def aligned_face(img: np.ndarray, resolution: int, what: str, framing: str = "ffhq") -> np.ndarray:
    """The photo's largest face cropped as the generator's training faces were (``framing``, see
    data/align.py), uint8 [R, R, 3]; 422 without a face."""
    from ..data.align import NoFace, align_image

    try:
        return align_image(img, resolution, name=what, framing=framing).image
    except NoFace as e:
        raise UploadError(422, str(e)) from None
    except FacesynthError as e:  # dlib or its landmark model missing
        raise UploadError(503, str(e)) from None


def check_portrait(img: np.ndarray, what: str) -> None:
    """422 unless the photo has a face the talking-head pipeline can use (its own crop and landmarks)."""
    from ..data.align import NoFace
    from ..data.video import prepare_image

    try:
        prepare_image(img, 256, quiet=True)
    except NoFace as e:
        raise UploadError(422, str(e).replace("<image>", what, 1)) from None  # an array is named <image>
    except FacesynthError as e:
        raise UploadError(503, str(e)) from None


def save_photo(img: np.ndarray, path: Path) -> Path:
    Image.fromarray(img).save(path, format="PNG")
    return path


def save_video(data: bytes, path: Path, what: str) -> Path:
    """Writes the clip and checks ffmpeg can read it; 415 when it cannot."""
    from ..data.video import probe_video

    path.write_bytes(data)
    try:
        info = probe_video(path)
    except FacesynthError as e:
        reason = str(e).split("(", 1)[-1].rstrip(")") if "(" in str(e) else "unreadable"
        raise UploadError(415, f"{what} is not a video ffmpeg can read ({reason}); send an .mp4, .mov or "
                          ".webm clip") from None
    if info.width < 64 or info.height < 64:
        raise UploadError(422, f"{what} is too small ({info.width}x{info.height} pixels)")
    return path
