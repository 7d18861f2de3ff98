"""Layers torch lacks or that need the notes' semantics, and model builders by name.

- activations: ``ScaledTanh`` (1.7159 tanh(2x/3)), ``Maxout``, ``MaxoutLinear``, the
  ``ACTIVATIONS`` registry;
- normalization: norms by name for the builders, ``convert_sync_batchnorm``;
- layers: ``DropConnectLinear`` (+ ``dropconnect_linear``), ``GaussianNoise``, ``ScalarBias``;
- folding: ``population_statistics`` and ``fold_batchnorm`` (BN inference, Algorithm 2);
- recurrent: ``GRU``, torch's GRU with the notes' reset-before candidate as an option;
- models: the ``MODELS`` registry (``mlp``, ``cnn``, ``logistic``, ``rnn``, ``gru``,
  ``lstm``) and ``ResidualBlock``.
"""

from descend.nn.activations import ACTIVATIONS, Maxout, MaxoutLinear, ScaledTanh
from descend.nn.dropout import Dropout, DropoutMLP, mc_predict, weight_scaling_predict
from descend.nn.folding import fold_batchnorm, population_statistics
from descend.nn.layers import DropConnectLinear, GaussianNoise, ScalarBias, dropconnect_linear
from descend.nn.models import MODELS, RecurrentClassifier, ResidualBlock
from descend.nn.normalization import convert_sync_batchnorm, norm_layer
from descend.nn.recurrent import GRU

__all__ = [
    "ACTIVATIONS", "MODELS", "DropConnectLinear", "GaussianNoise", "ScalarBias", "dropconnect_linear",
    "fold_batchnorm", "population_statistics", "Maxout", "MaxoutLinear", "RecurrentClassifier", "ResidualBlock", "ScaledTanh",
    "convert_sync_batchnorm", "norm_layer",
]
__all__ += ["Dropout", "DropoutMLP", "mc_predict", "weight_scaling_predict", "GRU"]
