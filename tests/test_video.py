"""gan_models.video and gan_models.flicker on tiny synthetic clips (written with PyAV in the containers users send)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from gan_models import Settings
from gan_models.errors import GanModelsError, InvalidVideoError
from gan_models.flicker import FlickerReducer, consistent, warp
from gan_models.pipeline import translator_for
from gan_models.video import is_video_file, probe, translate_video

from .clips import frame_pixels, make_clip, read_clip


@pytest.fixture(scope="module")
def style(tiny_specs):
    return translator_for(tiny_specs["style"], backend="torch", background=False)


@pytest.fixture(scope="module")
def upscaler(tiny_specs):
    return translator_for(tiny_specs["upscale"], backend="torch", background=False)


@pytest.mark.parametrize("suffix, audio", [(".mp4", "aac"), (".webm", "opus"), (".mkv", "aac"), (".mov", "aac"),
                                           (".gif", None)])
def test_every_container_gives_a_browser_mp4_with_frames_rate_and_audio(style, tmp_path, suffix, audio):
    src = make_clip(tmp_path / f"clip{suffix}")
    before = read_clip(src)
    result = translate_video(style, src, tmp_path / "out.mp4")
    after = read_clip(tmp_path / "out.mp4")
    assert after["format"].startswith("mov,mp4") and after["codec"] == "h264" and after["pix_fmt"] == "yuv420p"
    assert after["size"] == before["size"] == (64, 48)
    assert after["frames"] == before["frames"] == result.frames == 6
    assert after["times"] == pytest.approx(before["times"], abs=1e-3)
    assert after["audio"] == audio
    if audio:
        assert after["audio_s"] == pytest.approx(before["audio_s"], abs=0.05)
        copied = before["audio"] in ("aac", "opus")
        assert result.audio == (f"audio copied ({audio})" if copied else f"audio re-encoded ({before['audio']} -> aac)")
    else:
        assert result.audio is None
    assert result.reduce_flicker is True and "6 frames, 64x48" in result.summary()


def test_silent_clip_stays_silent(style, tmp_path):
    src = make_clip(tmp_path / "silent.mp4", audio=False)
    translate_video(style, src, tmp_path / "out.mp4")
    assert read_clip(tmp_path / "out.mp4")["audio"] is None


def test_variable_frame_rate_keeps_its_timestamps(style, tmp_path):
    pts = [0, 40, 80, 300, 340, 600]
    src = make_clip(tmp_path / "vfr.mp4", pts=pts, time_base=Fraction(1, 1000))
    translate_video(style, src, tmp_path / "out.mp4", reduce_flicker=False)
    after = read_clip(tmp_path / "out.mp4")
    assert after["times"] == pytest.approx([p / 1000 for p in pts], abs=1e-3)
    assert after["audio_s"] == pytest.approx(0.704, abs=0.05)


@pytest.mark.parametrize("outscale, size", [(None, (128, 96)), (2, (64, 48)), (3, (96, 72))])
def test_upscaler_multiplies_the_frame_size(upscaler, tmp_path, outscale, size):
    src = make_clip(tmp_path / "clip.mp4", size=(32, 24), frames=3)
    result = translate_video(upscaler, src, tmp_path / "out.mp4", outscale=outscale)
    assert read_clip(tmp_path / "out.mp4")["size"] == size == (result.width, result.height)
    assert result.reduce_flicker is False


def test_style_keeps_size_made_even_and_capped_and_ignores_outscale(style, tmp_path):
    src = make_clip(tmp_path / "odd.mkv", size=(66, 50), frames=2)  # x264 takes even sizes only: 66x50 in
    result = translate_video(style, src, tmp_path / "out.mp4", outscale=4, max_side=33)
    assert (result.width, result.height) == (32, 24)  # 33x25 after the cap, then even
    assert read_clip(tmp_path / "out.mp4")["size"] == (32, 24)


def test_result_follows_the_model(style, tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=1, audio=False)
    translate_video(style, src, tmp_path / "out.mp4", reduce_flicker=False)
    with av.open(str(tmp_path / "out.mp4")) as c:
        got = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(np.float32)
    with av.open(str(src)) as c:
        decoded = next(c.decode(video=0)).to_image()
    want = np.asarray(style(decoded), dtype=np.float32)
    luma = np.array([0.299, 0.587, 0.114], np.float32)  # yuv420p keeps luma at full resolution, not colour
    assert np.abs(got @ luma - want @ luma).mean() < 4  # H.264 at crf 18


def _write_png_as_mp4(path: Path) -> Path:
    Image.fromarray(frame_pixels(0, 32, 32)).save(path, format="PNG")
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return path


def _no_frames(path: Path) -> Path:
    """A video track declared in the header with no packets (an audio track holds the file open)."""
    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream("libx264", rate=12)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("flac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*audio.encode(frame), *audio.encode()]:
            out.mux(packet)
    return path


def _empty_mp4(path: Path) -> Path:
    """What an MP4 muxer leaves when no frame ever came: a header without tracks."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    return path


def _unknown_codec(path: Path) -> Path:
    make_clip(path, audio=False)
    data = path.read_bytes()
    start = data.index(b"stsd")
    path.write_bytes(data[:start] + data[start:].replace(b"avc1", b"zzzz", 1))
    return path


def _corrupt(path: Path) -> Path:
    path.write_bytes(os.urandom(4096))
    return path


def _truncated_header(path: Path) -> Path:
    make_clip(path)
    path.write_bytes(path.read_bytes()[:200])
    return path


@pytest.mark.parametrize("make, message", [
    (_corrupt, r"bad\.mp4 is not a video file we can read"),
    (_truncated_header, r"bad\.mp4 (is not a video file we can read|has no video frames|: cannot decode)"),
    (_audio_only, r"bad\.mp4 is an audio-only file: it has no video to translate"),
    (_write_png_as_mp4, r"bad\.mp4 is a still image \(png_pipe\), not a video"),
    (_no_frames, r"bad\.mp4 has no video frames"),
    (_empty_mp4, r"bad\.mp4 is a file without a video stream"),
    (_unknown_codec, r"bad\.mp4: its video codec is not one we can decode"),
])
def test_bad_inputs_get_one_clear_line_and_leave_no_file(style, tmp_path, make, message):
    src = make(tmp_path / "bad.mp4")
    with pytest.raises(InvalidVideoError, match=message) as info:
        translate_video(style, src, tmp_path / "out" / "result.mp4")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_limits_length_pixels_and_file_size(style, tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=24)  # 2 s
    with pytest.raises(InvalidVideoError, match=r"clip\.mp4 lasts 2\.\d s, over the limit of 1 s"):
        probe(src, max_seconds=1)
    with pytest.raises(InvalidVideoError, match=r"frames of 64x48 are over the limit of 1,000 pixels"):
        translate_video(style, src, tmp_path / "out.mp4", max_pixels=1000)
    with pytest.raises(InvalidVideoError, match=r"clip\.mp4 is 0\.0 MB, over the limit of 0 MB"):
        translate_video(style, src, tmp_path / "out.mp4", max_bytes=100)
    with pytest.raises(InvalidVideoError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    assert not (tmp_path / "out.mp4").exists()
    assert probe(src, max_seconds=Settings().max_video_seconds).frames == 24


def test_cancelled_job_leaves_no_partial_file(style, tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=8)
    seen = []

    def progress(done, total):
        seen.append((done, total))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        translate_video(style, src, tmp_path / "out.mp4", batch=2, progress=progress)
    assert seen == [(2, 8)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_progress_counts_frames_in_batches(style, tmp_path):
    src = make_clip(tmp_path / "clip.webm", frames=5)
    seen = []
    translate_video(style, src, tmp_path / "out.mp4", batch=2, progress=lambda d, t: seen.append(d))
    assert seen == [2, 4, 5]
    with pytest.raises(GanModelsError, match="batch must be at least 1"):
        translate_video(style, src, tmp_path / "out.mp4", batch=0)


def test_is_video_file():
    assert is_video_file("a.MOV") and is_video_file("b.webm") and is_video_file("c.mkv")
    assert not is_video_file("a.png") and not is_video_file("moving.gif")  # a GIF stays an image in the CLI


# --- flicker reduction -----------------------------------------------------------------------------------------


def test_warp_follows_the_flow_and_the_consistency_check_finds_occlusions():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    shift = np.zeros((20, 30, 2), np.float32)
    shift[..., 0] = 2  # every pixel comes from 2 px to its right
    assert np.array_equal(warp(image, shift)[:, :28], image[:, 2:])
    assert consistent(shift, -shift).all()
    assert not consistent(shift, shift).any()  # forward and backward both to the right: no pixel agrees


def test_reducer_halves_flicker_on_a_still_shot_and_lets_a_cut_through():
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (48, 64, 3)).astype(np.float32), (0, 0), 1.5)
    scene = np.clip(128 + texture / texture.std() * 50, 0, 255)  # a textured view: something for the flow to hold
    reducer = FlickerReducer(0.6)
    raw, reduced = [], []
    for _ in range(12):
        noisy = np.clip(scene + rng.normal(0, 4, scene.shape), 0, 255).astype(np.uint8)  # sensor noise
        # a flickering "model": the input plus blotches of its own that change every frame
        blotches = cv2.GaussianBlur(rng.normal(0, 60, scene.shape).astype(np.float32), (0, 0), 2)
        raw.append(np.clip(scene + blotches, 0, 255).astype(np.uint8))
        reduced.append(reducer(noisy, raw[-1]))

    def change(frames):
        return np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(frames[3:], frames[4:], strict=False)])

    assert change(reduced) < 0.5 * change(raw)
    cut = np.full((48, 64, 3), 30, np.uint8)
    out = reducer(cut, cut)
    assert np.abs(out.astype(int) - 30).mean() < 0.5  # new scene: next to nothing of the old one blended in
    with pytest.raises(ValueError, match="flicker weight"):
        FlickerReducer(1.0)


def test_reducer_scales_the_flow_to_an_upscaled_result():
    reducer = FlickerReducer(0.5)
    small = frame_pixels(0, 32, 24)
    big = np.asarray(Image.fromarray(small).resize((128, 96)))
    reducer(small, big)
    assert np.abs(reducer(small, big).astype(int) - big).max() <= 1  # same frame again: unchanged



# --- command line ----------------------------------------------------------------------------------------------


def test_cli_treats_videos_like_images(tiny_specs, tmp_path, capsys):
    from gan_models.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "clip.mov", frames=4, size=(32, 24))
    Image.fromarray(frame_pixels(0, 20, 16)).save(folder / "still.png")
    (folder / "broken.webm").write_bytes(b"not a video")
    out = tmp_path / "out"
    model = tiny_specs["upscale"].bundled.parent
    code = main(["run", str(model), str(folder), "-o", str(out), "--outscale", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1  # the broken clip
    assert sorted(p.name for p in out.iterdir()) == ["clip_tiny-upscale.mp4", "still_tiny-upscale.png"]
    clip = read_clip(out / "clip_tiny-upscale.mp4")
    assert (clip["size"], clip["frames"], clip["audio"]) == ((64, 48), 4, "aac")  # PCM re-encoded to AAC
    assert "broken.webm is not a video file we can read" in err and "frame/s" in err
    assert "4 frames, 64x48" in err


def test_closing_the_job_early_stops_it_and_leaves_no_file(style, tmp_path):
    from gan_models.video import VideoResult, VideoStep, iter_translate_video

    src = make_clip(tmp_path / "clip.mp4", frames=9)
    steps = iter_translate_video(style, src, tmp_path / "out.mp4", batch=3)
    first = next(steps)
    assert isinstance(first, VideoStep) and (first.frames, first.total) == (3, 9)
    assert first.fps > 0 and first.eta_s is not None
    steps.close()  # what a cancelled request does to its handler's generator
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    *progress, last = iter_translate_video(style, src, tmp_path / "out.mp4", batch=3)
    assert [p.frames for p in progress] == [3, 6, 9] and isinstance(last, VideoResult) and last.frames == 9


def test_phone_rotation_is_applied_to_the_pixels(style, tmp_path):
    src = make_clip(tmp_path / "portrait.mov", frames=3, size=(64, 48), rotation=90, audio=False)
    result = translate_video(style, src, tmp_path / "out.mp4", reduce_flicker=False)
    assert (result.width, result.height) == (48, 64)
    with av.open(str(tmp_path / "out.mp4")) as c:
        frame = next(c.decode(video=0))
    assert (frame.width, frame.height, frame.rotation) == (48, 64, 0)
