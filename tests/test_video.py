"""Episode videos: kept only when asked, named by outcome, never overwritten."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np

from sim_eval.records.video import EpisodeVideo


class FramesOnly:
    """The one thing EpisodeVideo reads from an env: its latest upright renders."""

    def __init__(self):
        self.t = 0

    def frames(self):
        self.t += 1
        return {view: np.full((32, 32, 3), 10 * self.t, np.uint8) for view in ("agentview", "wrist")}


def _record(directory, stem, keep, steps=5):
    video, env = EpisodeVideo(directory, fps=10), FramesOnly()
    observer = video.observe(env)
    for _ in range(steps):
        observer(None, None, None, None)
    return video.finish(stem, keep=keep)


def test_videos_are_side_by_side_and_never_overwritten(tmp_path):
    first = _record(tmp_path, "libero_object_task01_ep000_failure", keep=True)
    second = _record(tmp_path, "libero_object_task01_ep000_failure", keep=True)
    assert first.name == "libero_object_task01_ep000_failure.mp4"
    assert second.name == "libero_object_task01_ep000_failure_1.mp4"
    frames = imageio.mimread(first)
    assert len(frames) == 5 and frames[0].shape == (32, 64, 3)


def test_unkept_video_leaves_no_file(tmp_path):
    assert _record(tmp_path, "libero_object_task01_ep001_success", keep=False) is None
    assert list(tmp_path.iterdir()) == []
