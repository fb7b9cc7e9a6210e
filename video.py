"""Colorizing a film: the Colorizer on each frame, the Stabilizer across frames, video_io for the files.

    from colorizer import Colorizer
    from video import colorize_video
    colorize_video(Colorizer.from_checkpoint(), "film.mp4", "Coloured_film.mp4")

Frames are streamed: a few are decoded ahead, each is colorized and encoded, so memory does not grow
with the film's length. Per frame the network predicts ab at its resolution (the only model call), the
stabiliser smooths it along the motion within the shot (temporal.py), and it is merged with the frame's
full-resolution L exactly as a photo is (Colorizer.colorize_grey_with_ab), so each frame's grey is kept.
With workers > 1 the network works on the next frames while the current one is merged and encoded.
"""
from __future__ import annotations

import collections
from typing import Iterable, Iterator

import numpy as np

from colorizer import Colorizer, ordered_map
from colour_prior import ColourPrior
from temporal import Stabilizer, StabilizerConfig
from video_io import VideoReader, VideoWriter, output_container, write_video


def colorize_frames(colorizer: Colorizer, greys: Iterable[np.ndarray], stabilizer: Stabilizer | None,
                    workers: int = 1, prior: ColourPrior | None = None) -> Iterator[np.ndarray]:
    """Grey frames (H, W) of a film, in order -> RGB frames (H, W, 3) uint8, lazily. stabilizer: a fresh
    Stabilizer (its .cuts tell the shots found), or None to colorize each frame on its own, as a photo.
    prior: one colour prior (e.g. a reference photo's colours) for every frame.

    The predictions run ahead on `workers` threads (at most 2 x workers frames held); the stabiliser,
    which needs them in order, and the merge run on the caller's thread.
    """
    for grey, ab in ordered_map(lambda g: (g, colorizer.predict_ab(g, prior=prior)), greys, workers):
        if stabilizer is not None:
            ab = stabilizer(grey, ab)
        yield colorizer.colorize_grey_with_ab(grey, ab, workers)


def colorize_video(colorizer: Colorizer, src: str, dst: str, stabilize: bool = True, crf: int | None = None,
                   workers: int = 1, progress: bool = False, config: StabilizerConfig | None = None,
                   prior: ColourPrior | None = None) -> int:
    """Colorize the film src into dst (its container from dst's extension), keeping its size, frame
    timing and audio; returns the number of frames. prior: one colour prior for every frame. Raises InputError (one line naming the file); on any
    failure or signal nothing is left under dst."""
    output_container(dst)  # an unknown output format fails before the work
    count = 0

    def fill(writer: VideoWriter) -> None:
        nonlocal count
        from tqdm import tqdm
        pts = collections.deque()  # of the frames decoded and not yet written (the output keeps the order)

        def greys() -> Iterator[np.ndarray]:
            for grey, p in reader.frames(audio=writer.copy_audio):
                pts.append(p)
                yield grey
        stabilizer = Stabilizer(config) if stabilize else None
        with tqdm(total=reader.info.frames or None, desc=src, unit="frame", disable=not progress,
                  leave=False) as bar:
            for rgb in colorize_frames(colorizer, greys(), stabilizer, workers, prior):
                writer.write(rgb, pts.popleft())
                count += 1
                bar.update(1)

    with VideoReader(src) as reader:
        write_video(dst, reader.info, fill, audio=reader.audio, crf=crf)
    return count
