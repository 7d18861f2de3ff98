"""Every bad argument gets the project's message: which argument, and what was received."""

import re

import pytest
import torch

import descend.optim as do

P = lambda: [torch.nn.Parameter(torch.zeros(2))]  # noqa: E731

TABLE = [
    (do.SGD, dict(lr=-1), ValueError, "`lr` must be >= 0. Received: lr=-1"),
    (do.SGD, dict(lr="fast"), TypeError, "`lr` must be a real number. Received: lr='fast'"),
    (do.SGD, dict(lr=0.1, momentum=-0.1), ValueError,
     "`momentum` must be >= 0 and <= 1. Received: momentum=-0.1"),
    (do.SGD, dict(lr=0.1, dampening=2.0), ValueError,
     "`dampening` must be >= 0 and <= 1. Received: dampening=2.0"),
    (do.SGD, dict(lr=0.1, nesterov=True), ValueError,
     "`nesterov` must be False when momentum <= 0 or dampening != 0 (momentum=0.0, "
     "dampening=0.0). Received: nesterov=True"),
    (do.SGD, dict(lr=0.1, momentum=0.9, nesterov=1), TypeError,
     "`nesterov` must be a bool. Received: nesterov=1"),
    (do.SGD, dict(lr=0.1, momentum=0.9, lookahead=True), ValueError,
     "`lookahead` must be False unless nesterov=True. Received: lookahead=True"),
    (do.SGD, dict(lr=0.1, momentum_form="heavy"), ValueError,
     "`momentum_form` must be one of 'torch', 'textbook'. Received: momentum_form='heavy'"),
    (do.SGD, dict(lr=0.1, weight_decay=-0.5), ValueError,
     "`weight_decay` must be >= 0. Received: weight_decay=-0.5"),
    (do.SGD, dict(lr=0.1, weight_decay_exclude="bias"), ValueError,
     "`weight_decay_exclude` must be one of 'none', 'bias_and_norm'. "
     "Received: weight_decay_exclude='bias'"),
    (do.SGD, dict(lr=0.1, l1=-1.0), ValueError, "`l1` must be >= 0. Received: l1=-1.0"),
    (do.SGD, dict(lr=0.1, l1_mode="lasso"), ValueError,
     "`l1_mode` must be one of 'subgradient', 'proximal'. Received: l1_mode='lasso'"),
    (do.SGD, dict(lr=0.1, clip_norm=0.0), ValueError,
     "`clip_norm` must be > 0. Received: clip_norm=0.0"),
    (do.SGD, dict(lr=0.1, clip_norm=1.0, clip_norm_type=-2), ValueError,
     "`clip_norm_type` must be a number > 0 or inf. Received: clip_norm_type=-2"),
    (do.SGD, dict(lr=0.1, clip_value=-1), ValueError,
     "`clip_value` must be > 0. Received: clip_value=-1"),
    (do.SGD, dict(lr=0.1, grad_noise=-0.1), ValueError,
     "`grad_noise` must be >= 0. Received: grad_noise=-0.1"),
    (do.SGD, dict(lr=0.1, fused=True, clip_value=1.0), ValueError,
     "`fused=True` needs one of torch's fused kernels for the group (clipping is not in "
     "torch's sgd). Received: fused=True"),
    (do.SGD, dict(lr=0.1, foreach="yes"), TypeError, "`foreach` must be a bool. Received: foreach='yes'"),
    (do.SGD, dict(lr=0.1, maximize="no"), TypeError, "`maximize` must be a bool. Received: maximize='no'"),
    (do.SGD, dict(lr=0.1, momentun=0.9), TypeError,
     "SGD got unexpected keyword argument(s): momentun (did you mean 'momentum'?). "
     "Received: momentun=0.9"),
    (do.Adam, dict(betas=(1.2, 0.9)), ValueError,
     "`betas` must be a pair with each entry in [0.0, 1.0). Received: betas=(1.2, 0.9)"),
    (do.Adam, dict(betas=0.9), TypeError, "`betas` must be a pair of two numbers. Received: betas=0.9"),
    (do.Adam, dict(eps=-1e-8), ValueError, "`eps` must be >= 0. Received: eps=-1e-08"),
    (do.Adam, dict(eps_root=-1.0), ValueError, "`eps_root` must be >= 0. Received: eps_root=-1.0"),
    (do.Adam, dict(amsgrad=1), TypeError, "`amsgrad` must be a bool. Received: amsgrad=1"),
    (do.Adam, dict(capturable="yes"), TypeError,
     "`capturable` must be a bool. Received: capturable='yes'"),
    (do.AdamW, dict(weight_decay=-1), ValueError, "`weight_decay` must be >= 0. Received: weight_decay=-1"),
    (do.RMSprop, dict(alpha=1.5), ValueError, "`alpha` must be >= 0 and <= 1. Received: alpha=1.5"),
    (do.RMSprop, dict(centered="yes"), TypeError, "`centered` must be a bool. Received: centered='yes'"),
    (do.RMSprop, dict(nesterov=True), ValueError,
     "`nesterov` must be False when momentum <= 0 or dampening != 0 (momentum=0.0, "
     "dampening=0.0). Received: nesterov=True"),
    (do.Adagrad, dict(lr_decay=-1), ValueError, "`lr_decay` must be >= 0. Received: lr_decay=-1"),
    (do.Adagrad, dict(initial_accumulator_value=-1), ValueError,
     "`initial_accumulator_value` must be >= 0. Received: initial_accumulator_value=-1"),
    (do.Adadelta, dict(rho=2), ValueError, "`rho` must be >= 0 and <= 1. Received: rho=2"),
    (do.Adadelta, dict(lr=float("nan")), ValueError, "`lr` must be finite. Received: lr=nan"),
]


@pytest.mark.parametrize("cls,kwargs,exc,message", TABLE,
                         ids=[f"{c.__name__}-{next(iter(k))}" for c, k, _, _ in TABLE])
def test_message(cls, kwargs, exc, message):
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        cls(P(), **kwargs)


def test_transforms_check_their_own_arguments():
    with pytest.raises(ValueError, match=re.escape("`clip_norm` must be > 0. Received: clip_norm=-1")):
        do.clip_by_global_norm(clip_norm=-1)
    with pytest.raises(TypeError, match="scale_by_adam got unexpected keyword argument"):
        do.scale_by_adam(beta1=0.9)
    with pytest.raises(TypeError, match="`transforms` must be Transform instances"):
        do.chain(do.scale_by_lr(), "adam")
    with pytest.raises(TypeError, match="Optimizer got unexpected keyword argument.*Received: betas"):
        do.Optimizer(P(), do.chain(do.scale_by_lr()), betas=(0.9, 0.9))


def test_sparse_gradients_are_refused():
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = do.Adam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()
