"""`python -m facesynth.web.animate_worker '{json}'`: one talking-head video, in a process of its own.

The server runs each animation here rather than in its own process, so that a crash, a runaway clip or
its memory stays out of the server, and so a job past its time can be killed.  The progress bars of
``reenact`` go to stderr, where the server reads them; the report (or the error) is the last line of
stdout, as JSON.
"""

from __future__ import annotations

import contextlib
import json
import sys


def main(argv: list[str] | None = None) -> int:
    args = json.loads((argv if argv is not None else sys.argv[1:])[0])
    from ..animate.reenact import reenact
    from ..errors import FacesynthError
    from ..util.device import pick_device

    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the answer
            report = reenact(args["ckpt"], args["driver"], args["out"], sources=[args["photo"]], side_by_side=False,
                             max_frames=args.get("max_frames"), device=pick_device(args.get("device", "auto")),
                             quiet=False)
    except FacesynthError as e:
        print(json.dumps({"error": str(e)}), flush=True)
        return 2
    print(json.dumps(report, default=str), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
