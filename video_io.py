"""Reading and writing videos, streamed a frame at a time: a film -> grey frames, RGB frames -> a film.

Decoding and encoding go through PyAV, whose wheel carries its own FFmpeg (no system FFmpeg is used).
PyAV is imported only when a video is opened, so images work without it; a missing PyAV is one
InputError naming the pip command. As in image_io, every problem with an input becomes one InputError
that names the file, and outputs are written atomically (temporary file, then rename, removed on
SIGINT / SIGTERM by utils.remove_temporaries_on_signals): an interrupted run leaves nothing under the
final name.

The output keeps the input's resolution, frame timestamps (so its frame rate and any variable timing)
and audio (copied as it is when the output container takes its codec, else re-encoded). Video is encoded
as H.264 (yuv420p, tagged BT.601) in mp4, mov, mkv and avi, and as VP9 in webm. A film stored turned,
with a display rotation (as phones record portrait video), is read upright, as players show it and as
FFmpeg's own command turns it, and written upright without one: a 1920x1080 film shown as portrait
comes out 1080x1920.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Callable, Iterator

import numpy as np

from image_io import InputError, first_line, write_file

# Containers we read and write, by extension -> FFmpeg muxer name.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
VIDEO_EXTENSIONS = tuple(CONTAINERS)
DEFAULT_CRF = 18  # H.264 constant quality: 18 is visually lossless for most films; lower is larger
WEBM_CRF = 31     # VP9's scale differs: about the quality of H.264's 18-20
# Audio codecs each container takes as they are; others are re-encoded (AAC, or Opus for webm). Matroska
# takes nearly any (we ask FFmpeg); mp4's list in FFmpeg claims PCM, which its muxer then refuses.
_AUDIO_COPY = {"mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
               "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"},
               "webm": {"opus", "vorbis"},
               "avi": {"mp3", "ac3", "aac", "pcm_s16le", "pcm_u8"}}
# Containers that store no presentation times: with B-frames the demuxer's guesses come out of order,
# so their frames are numbered at the frame rate instead (they are constant-rate anyway).
_NO_TIMESTAMPS = {"avi"}
# What a file's first bytes say it is, for the message about a file FFmpeg cannot open.
_SIGNATURES = [(4, b"ftyp", "MP4/MOV"), (0, b"\x1aE\xdf\xa3", "Matroska/WebM"), (8, b"AVI ", "AVI"),
               (0, b"GIF8", "GIF")]


def is_video(path: str) -> bool:
    """Whether path is named like a video we read (by its extension)."""
    return os.path.splitext(path)[1].lower() in CONTAINERS


def require_av(path: str):
    """The av module, or an InputError naming the pip command."""
    try:
        import av
    except ImportError:
        raise InputError(f"{path}: videos need PyAV, which is not installed (pip install av)") from None
    return av


def _why_unopenable(path: str, e: Exception) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    kind = next((name for at, sig, name in _SIGNATURES if head[at:at + len(sig)] == sig), None)
    detail = getattr(e, "strerror", None) or first_line(e)
    if kind:
        return f"cannot read video (damaged or truncated {kind} file: {detail})"
    return f"cannot read video (not a video file, or a format FFmpeg cannot read: {detail})"


@dataclass
class VideoInfo:
    """What the writer needs to keep from the input."""
    width: int
    height: int
    rate: Fraction        # average frame rate, frames per second
    time_base: Fraction   # of the frame timestamps
    frames: int           # frame count from the header, or an estimate from the duration (0: unknown)


class VideoReader:
    """A video's frames as grey levels, decoded one at a time; with its audio packets for the writer.

        with VideoReader("film.mp4") as reader:
            for grey, pts in reader.frames(audio=writer.copy_audio):  # grey (H, W) uint8, pts in time_base
                ...

    Raises InputError (one line naming the file) for a missing, empty, damaged or truncated file, one
    with no video stream, or one whose codec this FFmpeg cannot decode, also when that shows mid-stream.
    """

    def __init__(self, path: str):
        av = require_av(path)
        self.path = path
        if not os.path.isfile(path):
            raise InputError(f"{path}: file not found")
        if os.path.getsize(path) == 0:
            raise InputError(f"{path}: file is empty")
        try:
            self.container = av.open(path, metadata_errors="ignore")
        except av.FFmpegError as e:
            raise InputError(f"{path}: {_why_unopenable(path, e)}") from None
        if not self.container.streams.video:
            self.close()
            raise InputError(f"{path}: has no video stream")
        self.video = self.container.streams.video[0]
        if self.video.codec_context is None:
            self.close()
            raise InputError(f"{path}: cannot read video (its video codec is unknown to PyAV's FFmpeg: no decoder)")
        self.video.thread_type = "AUTO"  # frame-parallel decoding
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        self.timestamps = not _NO_TIMESTAMPS & set(self.container.format.name.split(","))
        self.turns = display_turns(path)
        self.info = self._info()

    def _info(self) -> VideoInfo:
        s = self.video
        rate = s.average_rate or s.guessed_rate or Fraction(25)
        frames = s.frames
        if not frames and s.duration and s.time_base:
            frames = round(float(s.duration * s.time_base * rate))
        w, h = s.codec_context.width, s.codec_context.height
        if self.turns % 2:
            w, h = h, w
        return VideoInfo(w, h, Fraction(rate), Fraction(s.time_base or 1 / rate), frames or 0)

    def frames(self, audio: Callable[[object], None] | None = None) -> Iterator[tuple[np.ndarray, int | None]]:
        """(grey (H, W) uint8 full-range luma, pts in info.time_base or None) per frame, in display
        order; the audio packets met on the way go to audio(packet). A decoding error is an InputError."""
        av = require_av(self.path)
        streams = [self.video] + ([self.audio] if self.audio is not None and audio is not None else [])
        count = 0
        try:
            for packet in self.container.demux(streams):
                if packet.stream is not self.video:
                    if packet.dts is not None:  # the demuxer's empty flush packets carry none
                        audio(packet)
                    continue
                for frame in packet.decode():
                    count += 1
                    grey = frame.to_ndarray(format="gray")
                    if self.turns:
                        grey = np.ascontiguousarray(np.rot90(grey, self.turns))
                    yield grey, frame.pts if self.timestamps else None
        except av.FFmpegError as e:
            raise InputError(f"{self.path}: cannot decode frame {count + 1} "
                             f"({getattr(e, 'strerror', None) or first_line(e)})") from None
        if count == 0:
            raise InputError(f"{self.path}: no video frame could be decoded")

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def display_turns(path: str) -> int:
    """Quarter turns counter-clockwise (0-3) that show the film's frames upright: its display rotation,
    which FFmpeg hands out with the decoded frames (PyAV >= 13.1; 0 where older or for other angles)."""
    import av
    try:
        with av.open(path, metadata_errors="ignore") as c:
            frame = next(c.decode(video=0), None)
    except av.FFmpegError:
        return 0  # frames() reports what is wrong with the film
    degrees = getattr(frame, "rotation", 0) or 0
    return round(degrees / 90) % 4 if degrees % 90 == 0 else 0


def output_container(path: str) -> str:
    """FFmpeg's muxer for an output file, from its extension; InputError for an unknown one."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in CONTAINERS:
        raise InputError(f"{path}: unknown video output format {ext!r} (use {', '.join(VIDEO_EXTENSIONS)})")
    return CONTAINERS[ext]


class VideoWriter:
    """Encodes RGB frames into an open file object (see write_video): H.264 or VP9, with the input's
    size, timestamps and audio. Frames without a timestamp are numbered at the input's frame rate."""

    def __init__(self, file: BinaryIO, container: str, info: VideoInfo, audio=None, crf: int | None = None):
        import av
        self.av = av
        self.out = av.open(file, mode="w", format=container)
        webm = container == "webm"
        self.video = self.out.add_stream("libvpx-vp9" if webm else "libx264", rate=info.rate)
        ctx = self.video.codec_context
        ctx.width, ctx.height = info.width, info.height
        # 4:2:0 needs even sizes; an odd-sized film keeps its size as 4:4:4 (fewer players take it).
        even = info.width % 2 == 0 and info.height % 2 == 0
        self.pix_fmt = ctx.pix_fmt = "yuv420p" if even else "yuv444p"
        # The input's timestamps are kept (variable frame rates too), except in AVI, which counts frames.
        self.in_time_base = info.time_base
        self.time_base = 1 / info.rate if container == "avi" else info.time_base
        ctx.time_base = self.time_base
        ctx.colorspace, ctx.color_range = 6, 1  # SMPTE 170M (BT.601, the matrix we convert with), limited
        ctx.color_primaries = ctx.color_trc = 1  # BT.709 primaries and sRGB-like transfer: plain video
        if webm:
            self.video.options = {"crf": str(WEBM_CRF if crf is None else crf), "b": "0",
                                  "deadline": "good", "cpu-used": "5", "row-mt": "1"}
        else:
            self.video.options = {"crf": str(DEFAULT_CRF if crf is None else crf), "preset": "medium"}
        self.step = max(1, round(1 / (info.rate * self.time_base)))
        self.last_pts = None
        self.audio_out, self.reencode = None, False
        if audio is not None:
            self._add_audio(audio, container)

    def _add_audio(self, stream, container: str) -> None:
        """Copy the input's audio stream if the container takes its codec, else re-encode it."""
        name = stream.codec_context.codec.canonical_name if stream.codec_context is not None else None
        if name in _AUDIO_COPY.get(container, self.out.supported_codecs):
            self.audio_out = self.out.add_stream_from_template(stream)
            return
        if stream.codec_context is None:  # an audio codec we cannot decode: drop it rather than fail
            return
        codec = "libopus" if container == "webm" else "aac"
        self.audio_out = self.out.add_stream(codec, rate=48000 if codec == "libopus" else stream.rate)
        self.reencode = True

    def copy_audio(self, packet) -> None:
        """One audio packet of the input, muxed as it is (or decoded and re-encoded)."""
        if self.audio_out is None:
            return
        if not self.reencode:
            packet.stream = self.audio_out
            self.out.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None  # the encoder numbers its own samples
            self.out.mux(self.audio_out.encode(frame))

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        """One RGB (H, W, 3) uint8 frame; pts in the input's time base (None: the next frame's time)."""
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        # BT.601 limited range: the luma of the result is then the Y of the input (colorizer.match_luma).
        frame = frame.reformat(format=self.pix_fmt, dst_colorspace="ITU601", dst_color_range="MPEG")
        if pts is not None and self.time_base != self.in_time_base:
            pts = round(pts * self.in_time_base / self.time_base)
        if pts is None or (self.last_pts is not None and pts <= self.last_pts):
            pts = 0 if self.last_pts is None else self.last_pts + self.step
        frame.pts, frame.time_base, self.last_pts = pts, self.time_base, pts
        self.out.mux(self.video.encode(frame))

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        self.out.mux(self.video.encode())
        if self.audio_out is not None and self.reencode:
            self.out.mux(self.audio_out.encode())
        self.out.close()


def write_video(path: str, info: VideoInfo, fill: Callable[[VideoWriter], None], audio=None,
                crf: int | None = None) -> None:
    """Create path atomically: fill(writer) writes the frames (and audio packets) through a VideoWriter.

    An error inside fill (e.g. an InputError from decoding the input) or a signal removes the temporary
    file and leaves nothing under path; encoding errors become an InputError naming path.
    """
    container = output_container(path)
    av = require_av(path)

    def write(f: BinaryIO) -> None:
        writer = None
        try:
            writer = VideoWriter(f, container, info, audio, crf)
            fill(writer)
            writer.close()
        except av.FFmpegError as e:
            raise InputError(f"{path}: cannot encode video ({getattr(e, 'strerror', None) or first_line(e)})") from None
        finally:
            if writer is not None:  # after a failure: release FFmpeg's state (the file is removed anyway)
                with contextlib.suppress(Exception):
                    writer.out.close()

    write_file(path, write)


def read_frames(path: str) -> Iterator[np.ndarray]:
    """Every frame of a video as RGB (H, W, 3) uint8 (for tests and measurements)."""
    av = require_av(path)
    with av.open(path) as c:
        for frame in c.decode(video=0):
            yield frame.to_ndarray(format="rgb24")
