"""Data: bundled datasets, loaders for the standard downloaded files, deterministic splits."""

from descend.data.datasets import DATASETS, DataSplits, load, make_splits, stratified_split
from descend.data.files import DataFileError, RawSplits, load_cifar10, load_idx, load_idx_dataset
from descend.data.toy2d import make_toy2d, toy2d
from descend.data.synthetic import friedman, noisy_quadratic
from descend.data.augment import AUGMENTATIONS
from descend.data.preprocess import PREPROCESSORS, PCAWhiten, Standardize, ZCAWhiten, fit_splits
from descend.data.samplers import SAMPLERS

__all__ = [
    "DATASETS", "DataSplits", "load", "make_splits", "stratified_split",
    "DataFileError", "RawSplits", "load_cifar10", "load_idx", "load_idx_dataset",
    "make_toy2d", "toy2d", "friedman", "noisy_quadratic",
]
__all__ += ["AUGMENTATIONS", "PREPROCESSORS", "PCAWhiten", "Standardize", "ZCAWhiten", "fit_splits",
            "SAMPLERS"]
