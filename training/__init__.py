"""The training code behind `train.py`: one class per mode under one generic loop.

    config.py    TrainConfig: every option of a run (saved with each checkpoint)
    modes.py     MODES = {"cyclegan": CycleGanMode, "pix2pix": Pix2PixMode, "srgan": SrganMode}
    mode.py      GanMode: what the modes share (optimisers, loss scaling, adversarial terms, validation passes)
    cyclegan.py, pix2pix.py, srgan.py
                 one class each: defaults, networks, data, the step (papers' update order), validation metric,
                 log columns and saved outputs
    data.py      image folders, random crops, hand-drawn edge maps, step-indexed batches (exact resume)
    losses.py    GAN objectives, gradient penalty, feature matching, image pool, VGG content loss
    networks.py  the generator to train (--model / --init / default) and the discriminators
    trainer.py   Trainer: device, precision, seeds, the loop, checkpoints, random state, signals, log.csv
    card.py      final/README.md (the Hub model card) and the upload to the Hub

Nothing here is imported by `gan_models` (the app imports that package; torchvision's VGG stays out of it).
"""

from gan_models.errors import GanModelsError


class TrainError(GanModelsError):
    """Unusable data, options or checkpoint; `train.main` prints the message on one line and exits with code 2."""
