"""Training: the Trainer, its callbacks and run state."""

from descend.train.callbacks import CALLBACKS, Callback, MonitorCallback
from descend.train.checkpoint import CheckpointCallback, NanGuard, latest_checkpoint, restore
from descend.train.early_stopping import EarlyStopping, continue_on_all, retrain_on_all
from descend.train.logging import CSVLogger, TensorBoardLogger
from descend.train.metrics import METRICS
from descend.train.monitors import (ActivationMonitor, GradientNormMonitor, HyperparameterMonitor,
                                    UpdateRatioMonitor, default_monitors, save_monitors)
from descend.train.trainer import History, Trainer

__all__ = ["CALLBACKS", "Callback", "MonitorCallback"]
__all__ += ["CheckpointCallback", "NanGuard", "latest_checkpoint", "restore"]
__all__ += ["EarlyStopping", "continue_on_all", "retrain_on_all"]
__all__ += ["CSVLogger", "History", "METRICS", "TensorBoardLogger", "Trainer"]
__all__ += ["ActivationMonitor", "GradientNormMonitor", "HyperparameterMonitor",
            "UpdateRatioMonitor", "default_monitors", "save_monitors"]

# Registers the regularizer callbacks (l1_penalty, l2_penalty, fgsm, ...) in CALLBACKS, so a
# recipe's `callbacks:` list reaches them once descend.train is imported; likewise the data
# callbacks (augment, loss_feedback). The monitors are registered by the import above.
import descend.regularize  # noqa: E402,F401  (after CALLBACKS exists: regularize imports it)
import descend.data.augment  # noqa: E402,F401
import descend.data.samplers  # noqa: E402,F401
