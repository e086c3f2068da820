"""Optimizers with ``torch.optim``'s formulas, defaults and checks, over ``module.parameters()``::

    opt = llm_utils.optim.AdamW(module.parameters(), lr=1e-2)
    opt.zero_grad()
    y = module(x)
    module.backward(grad_of_loss(y))
    opt.step()

Parameters whose ``grad`` is None (W_query and W_key of Linear4/Linear5) are skipped entirely,
weight decay included, as in PyTorch. One parameter group per optimizer; the hyperparameters
are fixed at construction.
"""

from ._core import SGD, AdamW

for _cls in (SGD, AdamW):
    _cls.__module__ = __name__
del _cls

__all__ = ["SGD", "AdamW"]
