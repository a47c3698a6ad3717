"""The training modes, by the name `train.py` takes on its command line."""

from __future__ import annotations

from .cyclegan import CycleGanMode
from .mode import GanMode
from .pix2pix import Pix2PixMode
from .srgan import SrganMode

MODES: dict[str, type[GanMode]] = {"cyclegan": CycleGanMode, "pix2pix": Pix2PixMode, "srgan": SrganMode}
