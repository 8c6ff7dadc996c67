"""The talking-head data of the warping model: the shared clips prepared once, and the fixed held-out split.

Prints the 6 held-out clips (people seen in no other clip, chosen by a hash of the names from
more-videos/manifest.tsv) as the comma-separated list `animate train --exclude` takes.  With --prepare,
first tracks and crops every shared clip (videos/ and more-videos/) into one prepared folder, at most
--max-frames frames a clip (a minute of tracking on this CPU for the 83 clips).

    python benchmarks/talking_heldout.py [--prepare runs/clips128 --resolution 128 --max-frames 240]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facesynth.animate.heldout import heldout_clips

HERE = Path(__file__).resolve().parent
TALKING = HERE.parents[1] / "shared" / "data" / "talking"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default=str(TALKING / "more-videos" / "manifest.tsv"))
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--prepare", default=None, help="prepare the shared clips into this folder first")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--max-frames", type=int, default=240)
    args = ap.parse_args()
    if args.prepare:
        from facesynth.data.video import prepare_videos

        for folder in ("videos", "more-videos"):
            prepare_videos([TALKING / folder], args.prepare, args.resolution, max_frames=args.max_frames)
    print(",".join(heldout_clips(args.manifest, args.count)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
