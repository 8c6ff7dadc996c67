"""A fixed held-out split of talking-face clips: people never trained on, kept aside for ``animate eval``.

Chosen from a clips manifest (tab-separated, with a header: ``file``, ``seconds`` and the column saying
whether the clip shows the same person as another clip) by a hash of each clip's name, so the split never
changes and never depends on the manifest's order.  Only clips of people seen in no other clip, and long
enough for sources from the first half and targets from the second, are candidates.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from ..errors import FacesynthError

SAME_PERSON_COLUMN = "same person as another kept clip"


def heldout_clips(manifest: str | Path, count: int = 6, min_seconds: float = 3.0) -> list[str]:
    """Names (file stems) of the ``count`` held-out clips the manifest's hash order picks."""
    path = Path(manifest)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError as e:
        raise FacesynthError(f"{path}: cannot read ({e.strerror or e})") from None
    need = {"file", "seconds", SAME_PERSON_COLUMN}
    if not rows or not need <= set(rows[0]):
        raise FacesynthError(f"{path}: not a clips manifest (needs the columns {', '.join(sorted(need))})")
    candidates = []
    for row in rows:
        try:
            long_enough = float(row["seconds"]) >= min_seconds
        except (TypeError, ValueError):
            raise FacesynthError(f"{path}: clip {row['file']!r} has no valid length in seconds") from None
        if long_enough and (row[SAME_PERSON_COLUMN] or "").strip() == "no":
            candidates.append(Path(row["file"]).stem)
    if len(candidates) < count:
        raise FacesynthError(f"{path}: only {len(candidates)} clips qualify for a held-out split of {count}")
    return sorted(candidates, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:count]


__all__ = ["heldout_clips"]
