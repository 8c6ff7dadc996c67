"""Every face says it was made here: Content Credentials (a signed C2PA manifest) in each image and video
facesynth writes, an invisible watermark in its pixels, and `facesynth detect` to read both.

keys.py      the signing key: the user's certificate, or a local one made on first use
manifest.py  C2PA manifests: what a file claims, signed; read back with their validation state
watermark.py the pixel watermark: embed, and read from images or video frames
marking.py   the writers' one entry point: a Provenance, watermarked pixels, signed files
detect.py    `facesynth detect`: a file's credentials and watermark, as a line or JSON
"""

from .marking import Provenance, enabled, for_animation, for_model, marked, sign_file, signed, turn_off

__all__ = ["Provenance", "enabled", "for_animation", "for_model", "marked", "sign_file", "signed", "turn_off"]
