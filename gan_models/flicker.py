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
(Kroeger et al. 2016) from OpenCV, computed on the INPUT frames, which do not flicker.
"""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_WEIGHT = 0.6
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


def warp(image: np.ndarray, flow_to_source: np.ndarray) -> np.ndarray:
    """Backward warp: out[x] = image[x + flow_to_source[x]] (bilinear, edges replicated); sizes must match."""
    h, w = flow_to_source.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, grid_x + flow_to_source[..., 0], grid_y + flow_to_source[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def consistent(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(H, W) bool: True where the backward flow (current -> previous frame) and the forward flow (previous ->
    current), followed there, cancel out (Ruder et al. 2016); False marks occlusions and unreliable flow."""
    forward_there = warp(forward, backward)
    total = backward + forward_there
    error = np.sum(total * total, axis=-1)
    magnitude = np.sum(backward * backward, axis=-1) + np.sum(forward_there * forward_there, axis=-1)
    return error <= CONSISTENCY_RELATIVE * magnitude + CONSISTENCY_ABSOLUTE


def visibility(current: np.ndarray, warped_previous: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: exp(-alpha * mean squared colour error) between the current input frame and the
    previous one warped onto it (uint8 RGB), as in Lai et al. 2018."""
    diff = current.astype(np.float32) - warped_previous.astype(np.float32)
    err = np.mean(diff * diff, axis=-1) / (255.0 * 255.0)
    return np.exp(-VISIBILITY_ALPHA * err).astype(np.float32)


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
    m = (weight * mask)[..., None]
    out = current.astype(np.float32) * (1.0 - m) + warped_previous.astype(np.float32) * m
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class FlickerReducer:
    """Stateful wrapper for one video: feed (input frame, translated frame) pairs in display order.

    Holds only the previous input (gray and RGB) and the previous result, so memory does not grow with the clip.
    """

    def __init__(self, weight: float = DEFAULT_WEIGHT) -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"flicker weight must be in [0, 1), not {weight}")
        self.weight = weight
        self._estimator = dis_flow()
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # gray in, RGB in, result

    def __call__(self, frame_in: np.ndarray, frame_out: np.ndarray) -> np.ndarray:
        """The stabilised result for this frame; (H, W, 3) uint8 RGB in and out (the result may be larger than the
        input: the flow is scaled to it)."""
        current_gray = gray(frame_in)
        if self._previous is not None and self._previous[0].shape == current_gray.shape and self.weight > 0:
            previous_gray, previous_in, previous_out = self._previous
            backward = flow(self._estimator, current_gray, previous_gray)
            forward = flow(self._estimator, previous_gray, current_gray)
            mask = consistent(backward, forward).astype(np.float32) * visibility(frame_in, warp(previous_in, backward))
            size = (frame_out.shape[1], frame_out.shape[0])
            if previous_out.shape == frame_out.shape:
                if mask.shape != frame_out.shape[:2]:
                    mask = cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR)
                frame_out = blend(frame_out, warp(previous_out, resize_flow(backward, size)), mask, self.weight)
        self._previous = (current_gray, frame_in, frame_out)
        return frame_out
