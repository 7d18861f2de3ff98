"""Initialization: where training starts decides activation and gradient statistics.

- schemes: in-place initializers on one tensor, each with a ``generator`` (constant,
  normal N(0, 0.01), uniform_fan_in, LeCun, Xavier/Glorot, Caffe, He/MSRA, orthogonal,
  sparse, geometric-mean), ``fans`` and ``gain``, and the ``INITIALIZERS`` registry;
- rules: ``apply(model, scheme, *, generator=None, **kwargs)`` for a whole model;
- data_driven: ``lsuv(model, batch)`` and ``fixup(model)``.
"""

from descend.init.data_driven import fixup, lsuv
from descend.init.rules import apply, set_weight
from descend.init.schemes import (
    INITIALIZERS, caffe_uniform_, constant_, fans, gain, geometric_normal_, geometric_uniform_, he_normal_,
    he_uniform_, lecun_normal_, lecun_uniform_, normal_, orthogonal_, sparse_, uniform_fan_in_, xavier_normal_,
    xavier_uniform_,
)

kaiming_normal_ = he_normal_
kaiming_uniform_ = he_uniform_
glorot_uniform_ = xavier_uniform_
glorot_normal_ = xavier_normal_

__all__ = [
    "INITIALIZERS", "apply", "caffe_uniform_", "constant_", "fans", "fixup", "gain", "geometric_normal_",
    "geometric_uniform_", "glorot_normal_", "glorot_uniform_", "he_normal_", "he_uniform_", "kaiming_normal_",
    "kaiming_uniform_", "lecun_normal_", "lecun_uniform_", "lsuv", "normal_", "orthogonal_", "set_weight",
    "sparse_", "uniform_fan_in_", "xavier_normal_", "xavier_uniform_",
]
