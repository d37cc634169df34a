"""Per-episode mp4: both cameras side by side, streamed to disk while the episode runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# H.264 constant rate factor of every video sim_eval writes: a rendered LIBERO scene at 28 looks like the render and
# takes about half of libx264's default (~0.25 MB for a 280-step episode of both 256 px cameras), so a study can
# keep its cliff videos in the repository.
VIDEO_CRF = 28


class EpisodeVideo:
    """Streams frames to a temporary file and, once the outcome is known, keeps it under a name that says suite,
    task, episode and outcome; an existing file is never overwritten (a numeric suffix is added)."""

    def __init__(self, directory: Path, fps: int = 20):
        self.directory = Path(directory)
        self.fps = fps
        self._writer = None
        self._tmp = None

    def observe(self, env):
        def observer(obs, action, next_obs, info) -> None:
            frames = env.frames()
            if not frames:
                return
            if self._writer is None:
                import imageio.v2 as imageio

                self.directory.mkdir(parents=True, exist_ok=True)
                self._tmp = self.directory / f".recording-{os.getpid()}.mp4"
                self._writer = imageio.get_writer(
                    self._tmp,
                    fps=self.fps,
                    codec="libx264",
                    macro_block_size=8,
                    quality=None,
                    output_params=["-crf", str(VIDEO_CRF)],
                )
            self._writer.append_data(np.concatenate([frames["agentview"], frames["wrist"]], axis=1))

        return observer

    def finish(self, stem: str, keep: bool) -> Path | None:
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        if not keep:
            self._tmp.unlink(missing_ok=True)
            return None
        suffix = 0
        while True:
            target = self.directory / (f"{stem}.mp4" if suffix == 0 else f"{stem}_{suffix}.mp4")
            try:
                os.link(self._tmp, target)  # atomic, and fails rather than overwrite (parallel workers)
                break
            except FileExistsError:
                suffix += 1
        self._tmp.unlink()
        return target
