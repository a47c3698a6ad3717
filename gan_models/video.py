"""Video in, video out: decode -> Translator in batches -> [flicker reduction] -> H.264 encode, as a stream.

    clip (MP4, WebM, MOV, MKV, animated GIF) ─PyAV decode─▶ RGB frames ─▶ batches ─▶ Translator.run_array
        ─▶ FlickerReducer (optional) ─▶ libx264 yuv420p, even size, the input's timestamps ─▶ MP4 (+ audio)

Only the current batch, the previous frame (for the flow) and the codecs' own buffers are in memory, so peak
memory does not grow with the clip's length. The result is written to a temporary file next to `dst` and renamed
at the end: a failed or cancelled job (the progress callback may raise) leaves no partial file.
Audio is copied packet for packet when MP4 and browsers take its codec (AAC, MP3, Opus), else re-encoded to AAC.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from . import imaging
from .errors import GanModelsError, InvalidVideoError, first_line
from .files import atomic_path
from .flicker import FlickerReducer
from .pipeline import TileArg, Translator
from .settings import Settings

COPY_AUDIO = frozenset({"aac", "mp3", "opus"})  # MP4 holds them and browsers play them: copied, not re-encoded
MAX_FPS = 120  # frame-count bound: max_seconds x this, whatever the timestamps claim
_STILL_FORMATS = ("image2", "_pipe")  # FFmpeg demuxers of single images (png_pipe, jpeg_pipe, ...)

VideoProgress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns from a clip's headers (frames and duration are estimates; 0 / None when unknown)."""

    width: int
    height: int
    fps: Fraction
    frames: int
    duration_s: float | None
    video_codec: str
    audio_codec: str | None
    container: str


@dataclass(frozen=True)
class VideoResult:
    """What `translate_video` wrote, and how long it took (`model_s`: time inside the model only)."""

    path: Path
    frames: int
    width: int
    height: int
    fps: Fraction
    duration_s: float
    audio: str | None
    reduce_flicker: bool
    seconds: float
    model_s: float

    def summary(self) -> str:
        """One line for a UI or the CLI."""
        audio = self.audio or "no audio"
        flicker = "flicker reduction on" if self.reduce_flicker else "frame by frame"
        return (f"{self.frames} frames, {self.width}x{self.height}, {float(self.fps):.3g} fps, "
                f"{self.duration_s:.2f} s, {audio}, {flicker}; {self.seconds:.1f} s "
                f"({self.frames / max(self.seconds, 1e-9):.2f} frames/s)")


def is_video_file(path: str | Path) -> bool:
    """A video by its suffix (imaging.VIDEO_SUFFIXES), for the CLI's choice between the image and the video path. A
    GIF counts as an image there (its first frame, as before); `translate_video` takes animated GIFs too."""
    suffix = Path(path).suffix.lower()
    return suffix in imaging.VIDEO_SUFFIXES and suffix not in imaging.IMAGE_SUFFIXES


def _name(src: str | Path) -> str:
    return Path(src).name


def _open(src: str | Path) -> av.container.InputContainer:
    try:
        return av.open(str(src), metadata_errors="ignore")
    except FileNotFoundError:
        raise InvalidVideoError(f"{_name(src)}: no such file") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InvalidVideoError(f"{_name(src)} is not a video file we can read ({first_line(exc)})") from None


def _check(container: av.container.InputContainer, name: str, *, max_seconds: float, max_pixels: int) -> VideoInfo:
    if any(part in container.format.name for part in _STILL_FORMATS):
        raise InvalidVideoError(f"{name} is a still image ({container.format.name}), not a video: use an image tab")
    if not container.streams.video:
        kind = "an audio-only file" if container.streams.audio else "a file without a video stream"
        raise InvalidVideoError(f"{name} is {kind}: it has no video to translate")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    codec = ctx.name if ctx is not None else None
    if ctx is None or not codec or codec == "none":
        raise InvalidVideoError(f"{name}: its video codec is not one we can decode")
    width, height = ctx.width, ctx.height
    if width <= 0 or height <= 0:
        raise InvalidVideoError(f"{name}: its video stream has no frame size (corrupt or empty)")
    if width * height > max_pixels:
        raise InvalidVideoError(f"{name}: frames of {width}x{height} are over the limit of {max_pixels:,} pixels")
    duration = _duration(container, stream)
    if duration is not None and duration > max_seconds + 0.5:
        raise InvalidVideoError(f"{name} lasts {duration:.1f} s, over the limit of {max_seconds:g} s")
    fps = stream.average_rate or stream.guessed_rate or Fraction(25)
    frames = stream.frames or (round(duration * fps) if duration else 0)
    audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
    return VideoInfo(width, height, Fraction(fps), int(frames), duration, codec, audio, container.format.name)


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe(src: str | Path, *, max_seconds: float = Settings.max_video_seconds,
          max_pixels: int = imaging.DEFAULT_MAX_PIXELS, max_bytes: int | None = None) -> VideoInfo:
    """Read a clip's headers and check it against the limits, decoding nothing.

    Raises:
        InvalidVideoError: unreadable, no video stream (audio only), a still image, an unknown codec, longer than
            `max_seconds`, frames over `max_pixels`, a file over `max_bytes`.
    """
    _check_size(src, max_bytes)
    with _open(src) as container:
        return _check(container, _name(src), max_seconds=max_seconds, max_pixels=max_pixels)


def _check_size(src: str | Path, max_bytes: int | None) -> None:
    try:
        size = Path(src).stat().st_size
    except FileNotFoundError:
        raise InvalidVideoError(f"{_name(src)}: no such file") from None
    if size == 0:
        raise InvalidVideoError(f"{_name(src)} is empty")
    if max_bytes is not None and size > max_bytes:
        raise InvalidVideoError(f"{_name(src)} is {size / 2**20:.1f} MB, over the limit of {max_bytes / 2**20:.0f} MB")


def _quarter_turns(src: str | Path) -> int:
    """Counter-clockwise quarter turns that show the clip upright (its display matrix, as phones record it),
    read from the first frame; 0 when none or unreadable (the main pass then reports the error)."""
    try:
        with _open(src) as container:
            for frame in container.decode(video=0):
                return round(frame.rotation / 90) % 4
    except (InvalidVideoError, av.FFmpegError, OSError):
        return 0
    return 0


def output_size(translator: Translator, width: int, height: int, *, outscale: float | None,
                max_side: int | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """((model input W, H), (result W, H)) for a clip of `width` x `height`.

    An upscaler's result is `outscale` (default: its scale) x the frame; any other model keeps the frame size,
    shrunk to `max_side` on the long side when larger, and ignores `outscale`. The result's sides are even
    (yuv420p needs it): rounded down, at least 2.
    """
    if translator.spec.task == "upscale":
        scale = translator.spec.scale if outscale is None else float(outscale)
        if not 0 < scale <= 8:
            raise GanModelsError(f"outscale must be in (0, 8], not {outscale}")
        model_in = (width, height)
        target = (round(width * scale), round(height * scale))
    else:
        shrink = min(1.0, max_side / max(width, height)) if max_side else 1.0
        model_in = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        target = (model_in[0] * translator.spec.scale, model_in[1] * translator.spec.scale)
    return model_in, (max(2, target[0] // 2 * 2), max(2, target[1] // 2 * 2))


@dataclass(frozen=True)
class VideoStep:
    """Progress of `iter_translate_video`: frames written so far, the estimated total (None when unknown) and the
    seconds since the job started."""

    frames: int
    total: int | None
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None when the total or the rate is unknown."""
        if self.total is None or self.fps <= 0:
            return None
        return max(0.0, (self.total - self.frames) / self.fps)


def translate_video(translator: Translator, src: str | Path, dst: str | Path, *,
                    progress: VideoProgress | None = None, **options: Any) -> VideoResult:
    """Translate or upscale every frame of `src` into an H.264 MP4 at `dst`; see `iter_translate_video` for the
    options. `progress(frames done, estimated total or None)` is called after each batch; it may raise to cancel
    (the exception propagates and no file is left)."""
    for step in iter_translate_video(translator, src, dst, **options):
        if isinstance(step, VideoResult):
            return step
        if progress is not None:
            progress(step.frames, step.total)
    raise AssertionError("iter_translate_video ended without a result")


def iter_translate_video(
    translator: Translator,
    src: str | Path,
    dst: str | Path,
    *,
    outscale: float | None = None,
    reduce_flicker: bool | None = None,
    flicker_weight: float | None = None,
    tile: TileArg = "auto",
    batch: int = 4,
    max_seconds: float = Settings.max_video_seconds,
    max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
    max_side: int | None = Settings.max_style_side,
    max_bytes: int | None = None,
    crf: int = 18,
    preset: str = "veryfast",
) -> Iterator[VideoStep | VideoResult]:
    """The video job as a generator: a VideoStep after each batch, the VideoResult last (see the module docstring).

    Closing the generator early (a cancelled request) stops the job and removes the temporary file; `dst` is
    written only when the last frame is encoded. One backend (the translator's at the start) runs the whole clip.

    Parameters:
        outscale: upscalers only (see `output_size`); ignored by style models.
        reduce_flicker: blend with the flow-warped previous result (`gan_models.flicker`); None: on for style and
            sketch models, off for upscalers. flicker_weight: the blend weight (default flicker.DEFAULT_WEIGHT).
        batch: frames decoded before they go through the model together (the translator runs them one by one
            today: `run_array` takes batch 1; the batch bounds memory either way).
        max_seconds, max_pixels, max_bytes: limits on the clip's length, frame size and file size.
        max_side: style models: long-side cap of the frames they see (Settings.max_style_side).
        crf, preset: libx264 quality and speed.

    Raises:
        InvalidVideoError: bad input (see `probe`), a clip with no frames, a decode error, limits passed while
            decoding (timestamps or frame count beyond what the headers said).
        GanModelsError: from the translator; OSError: the output cannot be written.
    """
    started = time.perf_counter()
    name = _name(src)
    dst = Path(dst)
    if batch < 1:
        raise GanModelsError(f"batch must be at least 1, not {batch}")
    _check_size(src, max_bytes)
    if reduce_flicker is None:
        reduce_flicker = translator.spec.task != "upscale"
    with _open(src) as container:
        info = _check(container, name, max_seconds=max_seconds, max_pixels=max_pixels)
        upright = (info.height, info.width) if _quarter_turns(src) % 2 else (info.width, info.height)
        model_in, size = output_size(translator, *upright, outscale=outscale, max_side=max_side)
        reducer = (FlickerReducer(*(() if flicker_weight is None else (flicker_weight,))) if reduce_flicker
                   else None)
        state = _Run(translator, model_in, size, tile, reducer)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst) as tmp:
            steps = _transcode(container, tmp, state, info, name, batch=batch, max_seconds=max_seconds,
                               max_pixels=max_pixels, crf=crf, preset=preset)
            try:
                for done in steps:
                    yield VideoStep(done, info.frames or None, time.perf_counter() - started)
            finally:
                steps.close()  # closes the output container while its temporary file still exists
    yield VideoResult(dst, state.frames, size[0], size[1], info.fps, state.last_time, state.audio_note,
                      reduce_flicker, time.perf_counter() - started, state.model_s)


class _Run:
    """Per-job state: the model call, flicker reducer and counters."""

    def __init__(self, translator: Translator, model_in: tuple[int, int], size: tuple[int, int], tile: TileArg,
                 reducer: FlickerReducer | None) -> None:
        self.translator = translator
        self.backend = translator.backend  # one runtime for the whole clip, whatever a background switch does
        self.model_in = model_in
        self.size = size
        self.tile = tile
        self.reducer = reducer
        self.frames = 0
        self.model_s = 0.0
        self.last_time = 0.0
        self.audio_note: str | None = None

    def translate(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 decoded frame -> (H', W', 3) uint8 result at `size`."""
        if (rgb.shape[1], rgb.shape[0]) != self.model_in:
            rgb = cv2.resize(rgb, self.model_in, interpolation=cv2.INTER_AREA)
        value_range = self.translator.spec.value_range
        x = imaging.to_tensor_range(rgb.astype(np.float32) * np.float32(1 / 255), value_range)
        t0 = time.perf_counter()
        y = self.translator.run_array(x, tile=self.tile, backend=self.backend)
        self.model_s += time.perf_counter() - t0
        out = imaging.from_tensor_range(y, value_range)
        del y
        if out.shape[2] == 1:
            out = np.repeat(out, 3, axis=2)
        out8 = (out[..., :3] * 255.0 + 0.5).astype(np.uint8)
        if (out8.shape[1], out8.shape[0]) != self.size:
            shrinking = out8.shape[1] > self.size[0]
            out8 = cv2.resize(out8, self.size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
        if self.reducer is not None:
            out8 = self.reducer(rgb, out8)
        return out8


def _decode(container: av.container.InputContainer, streams: list[av.stream.Stream], name: str
            ) -> Iterator[av.VideoFrame | av.Packet]:
    """Audio packets as they come and decoded video frames, in file order; FFmpeg errors become one line."""
    try:
        for packet in container.demux(streams):
            if packet.stream.type == "audio":
                yield packet
            else:
                yield from packet.decode()
    except (av.FFmpegError, OSError) as exc:
        raise InvalidVideoError(f"{name}: cannot decode ({first_line(exc)})") from None


def _transcode(container: av.container.InputContainer, tmp: Path, state: _Run, info: VideoInfo, name: str, *,
               batch: int, max_seconds: float, max_pixels: int, crf: int, preset: str) -> Iterator[int]:
    """Decode, translate and encode into `tmp`; yields the frames done after each batch."""
    vin = container.streams.video[0]
    vin.thread_type = "AUTO"
    ain = container.streams.audio[0] if container.streams.audio else None
    time_base = vin.time_base or Fraction(1, 90000)
    max_frames = int(max_seconds * MAX_FPS) + 1
    with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        vout = out.add_stream("libx264", rate=info.fps, options={"crf": str(crf), "preset": preset})
        vout.width, vout.height = state.size
        vout.pix_fmt = "yuv420p"
        vout.codec_context.time_base = time_base
        audio = _AudioOut(out, ain) if ain is not None else None
        state.audio_note = audio.note if audio is not None else None
        pending: list[av.VideoFrame] = []
        start: int | None = None
        last_pts = -1
        streams = [vin] + ([ain] if ain is not None else [])

        def flush() -> None:
            nonlocal last_pts
            for frame in pending:
                rgb = frame.to_ndarray(format="rgb24")
                if turns := round(frame.rotation / 90) % 4:  # upright pixels out, no display matrix
                    rgb = np.ascontiguousarray(np.rot90(rgb, turns))
                result = av.VideoFrame.from_ndarray(state.translate(rgb), format="rgb24")
                pts = last_pts + 1 if frame.pts is None else max(frame.pts, last_pts + 1)  # VFR: kept as they are
                result.pts, result.time_base = pts, time_base
                last_pts = pts
                for packet in vout.encode(result):
                    out.mux(packet)
            state.frames += len(pending)
            pending.clear()

        for item in _decode(container, streams, name):
            if isinstance(item, av.Packet):
                audio.write(item)
                continue
            if item.width * item.height > max_pixels:
                raise InvalidVideoError(f"{name}: a frame of {item.width}x{item.height} is over the limit of "
                                        f"{max_pixels:,} pixels")
            if start is None:
                start = item.pts or 0
            elapsed = float(((item.pts or 0) - start) * time_base)
            if elapsed > max_seconds or state.frames + len(pending) >= max_frames:
                raise InvalidVideoError(f"{name} runs past the limit of {max_seconds:g} s (or {max_frames} frames)")
            state.last_time = elapsed + (1 / float(info.fps))
            pending.append(item)
            if len(pending) >= batch:
                flush()
                yield state.frames
        if pending:
            flush()
            yield state.frames
        if state.frames == 0:
            raise InvalidVideoError(f"{name} has no video frames")
        for packet in vout.encode():
            out.mux(packet)
        if audio is not None:
            audio.finish()


class _AudioOut:
    """The input's first audio track in the MP4: packets copied, or decoded and re-encoded to AAC."""

    def __init__(self, out: av.container.OutputContainer, ain: av.AudioStream) -> None:
        self.out = out
        codec = ain.codec_context.name
        self.copy = codec in COPY_AUDIO
        if self.copy:
            self.stream = out.add_stream_from_template(ain)
            self.note = f"audio copied ({codec})"
        else:
            self.stream = out.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
            if ain.codec_context.layout is not None and ain.codec_context.layout.nb_channels <= 2:
                self.stream.layout = ain.codec_context.layout
            self.note = f"audio re-encoded ({codec} -> aac)"

    def write(self, packet: av.Packet) -> None:
        if self.copy:
            if packet.dts is None:  # the demuxer's flush packet
                return
            packet.stream = self.stream
            self.out.mux(packet)
            return
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:
            raise InvalidVideoError(f"cannot decode the audio track ({first_line(exc)})") from None
        for frame in frames:
            frame.pts = None  # the encoder's resampler renumbers samples
            for encoded in self.stream.encode(frame):
                self.out.mux(encoded)

    def finish(self) -> None:
        if not self.copy:
            for encoded in self.stream.encode():
                self.out.mux(encoded)
