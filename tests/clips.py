"""Tiny synthetic video clips written with PyAV, as a camera or an editor saves them (shared by the video tests)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# container suffix -> (video codec, pixel format, audio codec)
FORMATS = {
    ".mp4": ("libx264", "yuv420p", "aac"),
    ".webm": ("libvpx-vp9", "yuv420p", "libopus"),
    ".mkv": ("libx264", "yuv420p", "flac"),
    ".mov": ("libx264", "yuv420p", "pcm_s16le"),
    ".gif": ("gif", "rgb8", None),
}


def frame_pixels(i: int, width: int, height: int) -> np.ndarray:
    """A moving gradient with a bright square: frame i of a test clip, (H, W, 3) uint8."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)),
                    np.full_like(xx, (i * 37) % 256)], axis=-1).astype(np.uint8)
    x0 = (i * 3) % max(width - 8, 1)
    img[height // 4: height // 4 + 8, x0: x0 + 8] = 255
    return img


def make_clip(path: Path, *, frames: int = 6, size: tuple[int, int] = (64, 48), fps: int = 12,
              audio: bool = True, pts: list[int] | None = None, time_base: Fraction | None = None,
              rotation: int = 0) -> Path:
    """Write a clip in the container of `path`'s suffix (see FORMATS); `pts` (in `time_base`) makes it VFR;
    `rotation` (degrees counter-clockwise) is a display matrix, as a phone held upright writes it.

    The audio track is a 440 Hz tone as long as the video."""
    codec, pix_fmt, audio_codec = FORMATS[path.suffix]
    width, height = size
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if rotation:
            video.set_display_rotation(rotation)
        tb = time_base or Fraction(1, fps)
        video.codec_context.time_base = tb
        stream = out.add_stream(audio_codec, rate=48000) if audio and audio_codec else None
        if stream is not None:
            stream.layout = "stereo"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(i, width, height), format="rgb24")
            frame.pts, frame.time_base = (pts[i] if pts else i), tb
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if stream is not None:
            seconds = (pts[-1] * tb + Fraction(1, fps)) if pts else Fraction(frames, fps)
            _tone(out, stream, float(seconds))
    return path


def _tone(out: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    rate, chunk, t = 48000, 960, 0
    total = int(seconds * rate)
    while t < total:
        n = min(chunk, total - t)
        wave = (0.3 * np.sin(2 * np.pi * 440 * (t + np.arange(n)) / rate)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, t
        for packet in stream.encode(frame):
            out.mux(packet)
        t += n
    for packet in stream.encode():
        out.mux(packet)


def read_clip(path: Path) -> dict:
    """What a player sees: container, codecs, size, pixel format, frame count, timestamps (s), audio seconds."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        info = {"format": c.format.name, "codec": v.codec_context.name, "pix_fmt": v.codec_context.pix_fmt,
                "size": (v.width, v.height), "rate": v.average_rate, "audio": a.codec_context.name if a else None}
        times = [float(f.pts * v.time_base) for f in c.decode(video=0)]
    audio_s = 0.0
    if a is not None:
        with av.open(str(path)) as c:
            audio_s = sum(f.samples / f.sample_rate for f in c.decode(audio=0))
    return {**info, "frames": len(times), "times": times, "audio_s": audio_s}
