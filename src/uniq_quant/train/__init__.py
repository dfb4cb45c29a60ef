"""Training runs: settings, the epoch loop, checkpoints, DDP and the end-to-end run.

Modules:
    settings: TrainSettings, the run's settings, their flags and YAML recipes.
    engine: one training epoch, one evaluation pass, optimizer and learning-rate schedule.
    checkpoint: atomic checkpoint writes and random-number states.
    distributed: torchrun / DDP set-up (gloo on CPU, nccl on GPU) and cross-rank checks.
    run: train(settings), the whole run and its output folder.
"""

from uniq_quant.train.run import RunFolderError, run_folder, train
from uniq_quant.train.settings import TrainSettings, settings_from_dict

__all__ = ["RunFolderError", "TrainSettings", "run_folder", "settings_from_dict", "train"]
