"""Flicker reduction for frame-by-frame video translation: blend each result with the previous result warped
along the optical flow of the input frames, where that flow can be trusted.

A CycleGAN or an upscaler run frame by frame answers small input changes (sensor noise, compression, a pixel of
motion) with larger output changes, which read as flicker. This is the classical, non-learned form of the
short-term temporal consistency of Ruder et al. 2016 ("Artistic style transfer for videos", GCPR; flow-warped
previous output, forward-backward consistency for occlusions) and Lai et al. 2018 ("Learning Blind Video Temporal
Consistency", ECCV; the visibility weight exp(-alpha * ||I_t - warp(I_t-1)||^2) on the input frames):

    out_t = (1 - w * M) * f(I_t) + w * M * warp(out_t-1, F_t->t-1)

M is 0 where the backward and forward flows disagree (occluded or newly visible pixels, flow errors) and decays
with the warped input's colour error (lighting changes, cuts); w is the blend weight. The flow is DIS
(Kroeger et al. 2016) from OpenCV, computed on the INPUT frames, which do not flicker, at a reduced size
(ANALYSIS_SIDE) and scaled up: flow and masks are smooth, and the model's own time dominates anyway.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

DEFAULT_WEIGHT = 0.6
ANALYSIS_SIDE = 512  # flow, occlusion and visibility are computed with the long side at most this; then resized
VISIBILITY_ALPHA = 50.0  # Lai et al. 2018, on [0, 1] intensities
# Ruder et al. 2016, eq. 6: occluded where |w + w^|^2 > 0.01 (|w|^2 + |w^|^2) + 0.5 (pixels)
CONSISTENCY_RELATIVE = 0.01
CONSISTENCY_ABSOLUTE = 0.5


def dis_flow(preset: int = cv2.DISOPTICAL_FLOW_PRESET_FAST) -> cv2.DISOpticalFlow:
    """A DIS optical flow estimator (OpenCV); not thread-safe: one per video."""
    return cv2.DISOpticalFlow_create(preset)


def gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luma, the flow's input."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def flow(estimator: cv2.DISOpticalFlow, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Flow (H, W, 2) float32 from `src` to `dst` (uint8 gray): pixel x of `src` is at x + flow[x] in `dst`."""
    return estimator.calc(src, dst, None)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> np.ndarray:
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    grid = np.stack([xx, yy], axis=-1)
    grid.flags.writeable = False
    return grid


def warp(image: np.ndarray, flow_to_source: np.ndarray) -> np.ndarray:
    """Backward warp: out[x] = image[x + flow_to_source[x]] (bilinear, edges replicated); sizes must match."""
    h, w = flow_to_source.shape[:2]
    return cv2.remap(image, _grid(h, w) + flow_to_source, None, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def _squared_norm(field: np.ndarray) -> np.ndarray:
    x, y = cv2.split(field)
    return x * x + y * y


def consistent(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(H, W) bool: True where the backward flow (current -> previous frame) and the forward flow (previous ->
    current), followed there, cancel out (Ruder et al. 2016); False marks occlusions and unreliable flow."""
    forward_there = warp(forward, backward)
    error = _squared_norm(backward + forward_there)
    bound = CONSISTENCY_RELATIVE * (_squared_norm(backward) + _squared_norm(forward_there)) + CONSISTENCY_ABSOLUTE
    return error <= bound


def visibility(current: np.ndarray, warped_previous: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: exp(-alpha * mean squared colour error) between the current input frame and the
    previous one warped onto it (uint8 RGB), the weight of Lai et al. 2018."""
    diff = cv2.absdiff(current, warped_previous).astype(np.float32) * np.float32(1 / 255)
    err = cv2.transform(diff * diff, np.full((1, 3), 1 / 3, np.float32))  # mean over channels: (H, W)
    return np.exp(np.float32(-VISIBILITY_ALPHA) * err)


def resize_flow(flow_field: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A flow field at another resolution, `size` = (W, H): resampled and its vectors scaled to match."""
    h, w = flow_field.shape[:2]
    if (w, h) == size:
        return flow_field
    out = cv2.resize(flow_field, size, interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= size[0] / w
    out[..., 1] *= size[1] / h
    return out


def blend(current: np.ndarray, warped_previous: np.ndarray, mask: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight * mask) * current + weight * mask * warped_previous, uint8 in and out."""
    m = np.float32(weight) * mask.astype(np.float32, copy=False)
    return cv2.blendLinear(current, warped_previous, np.float32(1) - m, m)


def _analysis_size(w: int, h: int, side: int) -> tuple[int, int]:
    shrink = min(1.0, side / max(w, h))
    return max(1, round(w * shrink)), max(1, round(h * shrink))


class FlickerReducer:
    """Stateful wrapper for one video: feed (input frame, translated frame) pairs in display order.

    Holds only the previous input (at the analysis size) and the previous result, so memory does not grow
    with the clip. The flow and the masks are computed with the long side at most `analysis_side` and scaled to
    the result's size (which may be larger than the input: an upscaler's).
    """

    def __init__(self, weight: float = DEFAULT_WEIGHT, *, analysis_side: int = ANALYSIS_SIDE) -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"flicker weight must be in [0, 1), not {weight}")
        self.weight = weight
        self.analysis_side = analysis_side
        self._estimator = dis_flow()
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # input RGB, luma, result

    def __call__(self, frame_in: np.ndarray, frame_out: np.ndarray) -> np.ndarray:
        """The stabilised result for this frame; (H, W, 3) uint8 RGB in and out."""
        h, w = frame_in.shape[:2]
        small = _analysis_size(w, h, self.analysis_side)
        if small != (w, h):
            frame_in = cv2.resize(frame_in, small, interpolation=cv2.INTER_AREA)
        luma = gray(frame_in)
        if self._previous is not None and self.weight > 0:
            previous_in, previous_luma, previous_out = self._previous
            if previous_luma.shape == luma.shape and previous_out.shape == frame_out.shape:
                backward = flow(self._estimator, luma, previous_luma)
                forward = flow(self._estimator, previous_luma, luma)
                mask = consistent(backward, forward).astype(np.float32)
                mask *= visibility(frame_in, warp(previous_in, backward))
                size = (frame_out.shape[1], frame_out.shape[0])
                if mask.shape != frame_out.shape[:2]:
                    mask = cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR)
                frame_out = blend(frame_out, warp(previous_out, resize_flow(backward, size)), mask, self.weight)
        self._previous = (frame_in, luma, frame_out)
        return frame_out
