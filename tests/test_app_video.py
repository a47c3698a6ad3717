"""The Video tab's endpoint through the Gradio client API, against the live app built with tiny models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from .clips import make_clip, read_clip
from .conftest import app_settings, serve
from .test_app import build_app_models


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("video_server")
    config = app_settings(concurrency=2, max_style_side=48, max_video_seconds=2, max_file_size="1mb")
    with serve(build_app_models(root / "models"), config, root / "hf") as url:
        yield Client(url, verbose=False, download_files=str(root / "downloads"))


def _video(client: Client, clip, model: str, outscale: int = 4, reduce_flicker: bool = True) -> tuple[dict, str]:
    value, info = client.predict(handle_file(str(clip)), model, outscale, reduce_flicker, None,
                                 api_name="/video")
    path = value["video"] if isinstance(value, dict) else value
    return read_clip(path), info


def test_style_clip_with_audio_keeps_frames_rate_size_and_audio(client, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=8, size=(48, 32))
    before = read_clip(clip)
    after, info = _video(client, clip, "tiny-style", outscale=3)  # outscale: ignored by a style model
    assert (after["codec"], after["pix_fmt"], after["size"]) == ("h264", "yuv420p", (48, 32))
    assert after["frames"] == 8 and after["rate"] == before["rate"]
    assert after["times"] == pytest.approx(before["times"], abs=1e-3)
    assert after["audio"] == "aac" and after["audio_s"] == pytest.approx(before["audio_s"], abs=0.05)
    assert "8 frames, 48x32" in info and "audio copied (aac)" in info and "flicker reduction on" in info


def test_upscaler_multiplies_size_capped_style_and_silent_clips(client, tmp_path):
    clip = make_clip(tmp_path / "clip.webm", frames=4, size=(24, 16), audio=False)
    after, info = _video(client, clip, "tiny-upscale", outscale=2, reduce_flicker=False)
    assert after["size"] == (48, 32) and after["frames"] == 4 and after["audio"] is None
    assert "frame by frame" in info and "no audio" in info
    wide = make_clip(tmp_path / "wide.mov", frames=2, size=(96, 64))
    after, _ = _video(client, wide, "tiny-style")
    assert after["size"] == (48, 32) and after["audio"] == "aac"  # long side capped at max_style_side; PCM -> AAC


@pytest.mark.parametrize("name, message", [
    ("long", r"clip\.mp4 lasts 3\.0 s, over the limit of 2 s"),
    ("corrupt", "is not a video file we can read"),
    ("sketch", "tiny-sketch2photo is a sketch2photo model, not for style or upscale"),
])
def test_bad_requests_get_one_line(client, tmp_path, name, message):
    clip = tmp_path / "clip.mp4"
    if name == "corrupt":
        clip.write_bytes(b"\x00\x00\x00\x18ftypmp42 and then nothing")
    else:
        make_clip(clip, frames=36 if name == "long" else 2, fps=12)
    model = "tiny-sketch2photo" if name == "sketch" else "tiny-style"
    with pytest.raises(AppError, match=message) as info:
        _video(client, clip, model)
    assert "Traceback" not in str(info.value)
