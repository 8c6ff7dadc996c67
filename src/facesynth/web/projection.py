"""The projection job: find an uploaded face in the generator's latent space (a short StyleGAN2 projection),
so it can be mixed with seeds like any generated face."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable

import numpy as np
import torch

from ..synthesis.project import ProjectionSettings, project
from ..util.grid import save_png, to_uint8
from .faces import FaceModel
from .jobs import Job

SPACE = "w+"  # one w per layer: a closer likeness than a single w, and it mixes layer by layer all the same


class Projector:
    def __init__(self, model: FaceModel, mark=None):
        self.model = model
        self.mark = mark  # the provenance.Provenance of the reconstructions (None: unmarked)
        self._distance = None
        self._lock = threading.Lock()

    def distance(self):
        """The perceptual distance (Inception or LPIPS weights: tens of MB), loaded by the first job only."""
        from ..synthesis.portraits import default_distance

        with self._lock:
            if self._distance is None:
                self._distance = default_distance(self.model.G)[0]
            return self._distance

    def work(self, aligned: np.ndarray, steps: int) -> Callable[[Job], dict]:
        """The job for one aligned face (uint8 [R, R, 3] at the generator's resolution)."""
        def run(job: Job) -> dict:
            from ..metrics.similarity import psnr

            job.report(0.0, "loading the perceptual network")
            distance = self.distance()
            # project() swaps the network's noise buffers while it runs: never the copy the batcher draws with.
            G = copy.deepcopy(self.model.G)
            target = torch.from_numpy(aligned.copy()).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1
            settings = ProjectionSettings(space=SPACE, steps=steps, record_every=steps + 1)
            proj = project(G, target, distance, settings, quiet=True,
                           progress=lambda done, total: job.report(0.02 + 0.97 * done / total,
                                                                   f"optimising: step {done} of {total}"))
            job.data["ws"] = proj.ws
            save_png(to_uint8(proj.image)[0], job.folder / "reconstruction.png",
                     self.mark and self.mark.with_params(steps=steps, space=SPACE))
            return {"face": f"photo:{job.id}", "steps": steps, "space": SPACE, "seconds": round(proj.seconds, 2),
                    "psnr": round(float(psnr(proj.image, target)[0]), 2)}
        return run
