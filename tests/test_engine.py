"""Training-loop helpers: utils/training/optim.py."""
import torch

from utils.training.optim import clip_gradients


def _param_with_grad(values):
    p = torch.nn.Parameter(torch.zeros(len(values)))
    p.grad = torch.tensor(values, dtype=torch.float32)
    return p


def test_clip_gradients_keeps_networks_independent():
    small = _param_with_grad([3.0, 4.0])  # norm 5: below the limit, must stay untouched
    large = _param_with_grad([60.0, 80.0])  # norm 100: clipped to 10 on its own
    optimizers = {"detector": torch.optim.SGD([small], lr=0.1), "classifier": torch.optim.SGD([large], lr=0.1)}
    norms = clip_gradients(optimizers, max_norm=10.0)
    assert [round(float(n), 4) for n in norms] == [5.0, 100.0]
    assert torch.allclose(small.grad, torch.tensor([3.0, 4.0]))
    assert torch.allclose(large.grad, torch.tensor([6.0, 8.0]), atol=1e-4)


def test_clip_gradients_single_optimizer_is_global_clip():
    a, b = _param_with_grad([30.0]), _param_with_grad([40.0])  # joint norm 50
    clip_gradients({"model": torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1)}, max_norm=10.0)
    assert torch.allclose(torch.cat([a.grad, b.grad]), torch.tensor([6.0, 8.0]), atol=1e-4)
