"""Segmentation members: output shape on odd sizes, backward, registry, MC dropout."""

from __future__ import annotations

import pytest
import torch

from train.seg.models import N_CLASSES, ModelConfig, build_model, enable_mc_dropout

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["unet", "unetpp", "deeplabv3p"])
def member(request):
    torch.manual_seed(0)
    # Light smp encoder for speed where the test is about the wrapper, not the encoder size.
    return request.param, build_model(request.param)


def test_forward_backward_odd_size(member):
    name, model = member
    model.train()
    # Batch 2: DeepLabv3+'s ASPP pooling has batch norm on a 1x1 map, needs > 1 value in train.
    x = (torch.rand(2, 1, 60, 70) * 2 - 1).requires_grad_()
    y = model(x)
    assert y.shape == (2, N_CLASSES, 60, 70), name
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), f"{name}: a parameter got no gradient"
    assert sum(float(g.abs().sum()) for g in grads) > 0
    model.zero_grad(set_to_none=True)


def test_eval_shape_batch_one(member):
    name, model = member
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 61, 77)).shape == (1, N_CLASSES, 61, 77), name


def test_unet_native_size_needs_no_padding():
    model = build_model("unet").eval()
    assert 200 % model.multiple == 0 and 260 % model.multiple == 0
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 200, 260)).shape == (1, 5, 200, 260)


def test_mc_dropout_varies_and_eval_is_deterministic(member):
    name, model = member
    x = torch.rand(1, 1, 60, 70) * 2 - 1
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b), f"{name}: eval mode must be deterministic"
    enable_mc_dropout(model)
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        s = torch.stack([torch.softmax(model(x), 1) for _ in range(4)])
    assert s.std(0).max() > 1e-7, f"{name}: MC dropout gave identical passes"
    model.eval()


def test_registry_lists_valid_names():
    with pytest.raises(ValueError, match="deeplabv3p.*unet.*unetpp"):
        build_model(ModelConfig(arch="segformer"))
