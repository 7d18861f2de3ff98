"""Training: the Trainer, its callbacks and run state."""

from descend.train.callbacks import CALLBACKS, Callback, MonitorCallback

__all__ = ["CALLBACKS", "Callback", "MonitorCallback"]
