"""Training: the Trainer, its callbacks and run state."""

from descend._filelock import FolderInUseError
from descend.callbacks import CALLBACKS, Callback, MonitorCallback
from descend.train.checkpoint import CheckpointCallback, NanGuard, latest_checkpoint, restore
from descend.train.early_stopping import EarlyStopping, continue_on_all, retrain_on_all, train_after_stopping
from descend.train.logging import CSVLogger, TensorBoardLogger
from descend.train.metrics import METRICS
from descend.train.monitors import (ActivationMonitor, GradientNormMonitor, HyperparameterMonitor,
                                    UpdateRatioMonitor, default_monitors, save_monitors)
from descend.train.trainer import History, Trainer

__all__ = ["CALLBACKS", "Callback", "MonitorCallback"]
__all__ += ["CheckpointCallback", "FolderInUseError", "NanGuard", "latest_checkpoint", "restore"]
__all__ += ["EarlyStopping", "continue_on_all", "retrain_on_all", "train_after_stopping"]
__all__ += ["CSVLogger", "History", "METRICS", "TensorBoardLogger", "Trainer"]
__all__ += ["ActivationMonitor", "GradientNormMonitor", "HyperparameterMonitor",
            "UpdateRatioMonitor", "default_monitors", "save_monitors"]

# The protocol and CALLBACKS live on the ground floor (descend.callbacks); importing the
# modules that register callbacks there (regularizers, augmentation, the loss-feedback
# sampler, weight averaging) lets a recipe's `callbacks:` list reach every one of them
# once descend.train is imported. The monitors are registered by the imports above.
import descend.data.augment  # noqa: E402,F401
import descend.data.samplers  # noqa: E402,F401
import descend.optim.averaging  # noqa: E402,F401
import descend.regularize  # noqa: E402,F401
