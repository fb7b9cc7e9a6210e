"""Colorizing a film: the Colorizer on each frame, the Stabilizer across frames, video_io for the files.

    from colorizer import Colorizer
    from video import colorize_video
    colorize_video(Colorizer.from_checkpoint(), "film.mp4", "Coloured_film.mp4")

Frames are streamed: one is decoded, colorized and encoded at a time, so memory does not grow with the
film's length. Per frame the network predicts ab at its resolution (the only model call), the stabiliser
smooths it along the motion within the shot (temporal.py), and it is merged with the frame's
full-resolution L exactly as a photo is (Colorizer.colorize_grey_with_ab), so each frame's grey is kept.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from colorizer import Colorizer
from temporal import Stabilizer, StabilizerConfig
from video_io import VideoReader, VideoWriter, output_container, write_video


def frame_colorizer(colorizer: Colorizer, stabilize: bool = True, workers: int = 1,
                    config: StabilizerConfig | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function grey (H, W) -> RGB (H, W, 3) uint8 to call on a film's frames in order; with
    stabilize=False each frame is colorized on its own, as a photo."""
    stabilizer = Stabilizer(config) if stabilize else None

    def colorize(grey: np.ndarray) -> np.ndarray:
        ab = colorizer.predict_ab(grey)
        if stabilizer is not None:
            ab = stabilizer(grey, ab)
        return colorizer.colorize_grey_with_ab(grey, ab, workers)
    colorize.stabilizer = stabilizer  # its cuts, for measurements
    return colorize


def colorize_frames(colorizer: Colorizer, greys: Iterable[np.ndarray], stabilize: bool = True,
                    workers: int = 1, config: StabilizerConfig | None = None) -> Iterator[np.ndarray]:
    """Grey frames (H, W) in order -> RGB frames (H, W, 3) uint8, lazily."""
    return map(frame_colorizer(colorizer, stabilize, workers, config), greys)


def colorize_video(colorizer: Colorizer, src: str, dst: str, stabilize: bool = True, crf: int | None = None,
                   workers: int = 1, progress: bool = False, config: StabilizerConfig | None = None) -> int:
    """Colorize the film src into dst (its container from dst's extension), keeping its size, frame
    timing and audio; returns the number of frames. Raises InputError (one line naming the file); on any
    failure or signal nothing is left under dst."""
    output_container(dst)  # an unknown output format fails before the work
    colorize = frame_colorizer(colorizer, stabilize, workers, config)
    count = 0

    def fill(writer: VideoWriter) -> None:
        nonlocal count
        from tqdm import tqdm
        with tqdm(total=reader.info.frames or None, desc=src, unit="frame", disable=not progress,
                  leave=False) as bar:
            for grey, pts in reader.frames(audio=writer.copy_audio):
                writer.write(colorize(grey), pts)
                count += 1
                bar.update(1)

    with VideoReader(src) as reader:
        write_video(dst, reader.info, fill, audio=reader.audio, crf=crf)
    return count
