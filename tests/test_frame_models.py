"""Frame models: forward/backward of every registry entry, the θ parameterisation, export."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests._frame_fixtures import one_torch_thread  # noqa: F401 - fixture
from train.frame.export_wrapper import FrameExportWrapper
from train.frame.models import MODELS, build_model, get_spec
from train.frame.models.sampling import affine_crop, base_grid, identity_theta


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward_every_model(name):
    torch.manual_seed(0)
    model = build_model(name).train()
    x = torch.rand(2, 3, 224, 224)
    out = model(x)
    assert out["logits"].shape == (2, 4) and out["probs"].shape == (2, 4)
    assert out["theta1"].shape == (2, 2, 3) and out["theta2"].shape == (2, 2, 3)
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(2))
    spec = get_spec(name)
    if spec.consistency:
        assert out["logits2"] is not None and out["logits2"].shape == (2, 4)
    for v in out.values():
        assert v is None or torch.isfinite(v).all()
    loss = out["logits"].logsumexp(1).mean() - out["logits"][:, 0].mean()
    if out["logits2"] is not None:
        loss = loss + out["logits2"].pow(2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_unknown_model_lists_the_options():
    with pytest.raises(KeyError) as e:
        build_model("reg-snt")
    for name in MODELS:
        assert name in str(e.value)


def test_parameter_count_matches_paper():
    n = sum(p.numel() for p in build_model("reg-stn").parameters())
    assert 1.65e6 < n < 1.75e6  # PAPER.md: about 1.70 M


def test_matmul_grid_equals_affine_grid():
    torch.manual_seed(1)
    x = torch.rand(3, 3, 40, 50)
    theta = torch.randn(3, 2, 3) * 0.3 + identity_theta(3)
    ours = affine_crop(x, theta, base_grid(16, 24), (16, 24))
    ref = F.grid_sample(x, F.affine_grid(theta, (3, 3, 16, 24), align_corners=False),
                        mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_reg_stn_init_and_own_translations():
    model = build_model("reg-stn").eval()
    out = model(torch.rand(2, 3, 224, 224))
    t1, t2 = out["theta1"], out["theta2"]
    torch.testing.assert_close(t1[:, 0, 0], torch.full((2,), 0.5))
    torch.testing.assert_close(t2[:, 1, 1], torch.full((2,), 0.75))
    torch.testing.assert_close(t1[:, :, 2], torch.full((2, 2), 0.3))
    torch.testing.assert_close(t2[:, :, 2], torch.full((2, 2), 0.2))  # its own translation
    # θ = [[σ, r1, τα], [r2, σ, τβ]]: the same σ on the diagonal
    torch.testing.assert_close(t1[:, 0, 0], t1[:, 1, 1])
    # the translation head is live: a gradient step on crop 2's translation moves only θ2
    model.train()
    out = model(torch.rand(2, 3, 224, 224))
    out["theta2"][:, :, 2].sum().backward()
    g = model.translation.bias.grad
    assert g[:2].abs().sum() == 0 and g[2:].abs().sum() > 0


def test_fixed_scale_variant_keeps_scales():
    model = build_model("reg-stn-fixed-scale").eval()
    out = model(torch.rand(1, 3, 224, 224))
    assert float(out["theta1"][0, 0, 0]) == 0.5 and float(out["theta2"][0, 1, 1]) == 0.75
    assert float(out["theta1"][0, 0, 1]) == 0.0


def test_wrong_input_size_says_how_to_fix():
    with pytest.raises(ValueError, match="224"):
        build_model("reg-stn")(torch.rand(1, 3, 128, 128))


@pytest.mark.parametrize("name", ["reg-stn", "reg-stn-cpu"])
def test_export_wrapper_onnx_matches_torch(tmp_path, name):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    wrapper = FrameExportWrapper(build_model(name))
    # give the localisation heads non-trivial weights so θ depends on the input
    with torch.no_grad():
        heads = [getattr(wrapper.model, n) for n in ("translation", "scale", "offdiag")
                 if hasattr(wrapper.model, n)]
        for head in heads:
            head.weight.normal_(0, 0.05)
        if hasattr(wrapper.model, "evidence"):  # the soft-argmax head: a peaked, moving map
            wrapper.model.evidence.mlp[3].weight.normal_(0, 0.5)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        ref = wrapper(x)
    path = tmp_path / "frame.onnx"
    torch.onnx.export(wrapper, (x,), str(path), opset_version=17, dynamo=False,
                      input_names=["frames"], output_names=["probs", "theta1", "theta2"],
                      dynamic_axes={"frames": {0: "b"}})
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "GridSample" in ops and "AffineGrid" not in ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"frames": x.numpy()})
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4)


class _BothCrops(torch.nn.Module):
    """The model's own forward (Φ_cnn on both crops), for comparison with the export."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()

    def forward(self, x):
        out = self.model(x)
        return out["probs"], out["theta1"], out["theta2"]


@pytest.mark.parametrize("name", ["reg-stn", "reg-stn-cpu"])
def test_export_skips_crop_2s_classifier_with_the_same_outputs(tmp_path, name):
    """Prediction comes from crop 1: the exported graph runs Φ_cnn once per frame, not twice,
    and its outputs equal the model's forward."""
    pytest.importorskip("onnx")
    from benchmarks.macs import count

    torch.manual_seed(0)
    model = build_model(name).eval()
    if hasattr(model, "evidence"):
        with torch.no_grad():
            model.evidence.mlp[3].weight.normal_(0, 0.5)
    x = torch.rand(3, 3, 224, 224)
    pruned, full = FrameExportWrapper(model), _BothCrops(model)
    with torch.no_grad():
        for a, b in zip(pruned(x), full(x), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    gmac = {}
    for tag, mod in (("pruned", pruned), ("full", full)):
        path = tmp_path / f"{tag}.onnx"
        torch.onnx.export(mod, (x[:1],), str(path), opset_version=17, dynamo=False,
                          input_names=["frames"], output_names=["probs", "theta1", "theta2"])
        gmac[tag] = count(path)["gmac"]
    cnn_crop = _cnn_crop_gmac(tmp_path, model)
    assert gmac["full"] - gmac["pruned"] == pytest.approx(cnn_crop, rel=0.02)


def _cnn_crop_gmac(tmp_path, model) -> float:
    """GMAC of Φ_cnn on one 112x112 crop."""
    from benchmarks.macs import count

    path = tmp_path / "cnn.onnx"
    torch.onnx.export(model.cnn.eval(), (torch.rand(1, 3, 112, 112),), str(path),
                      opset_version=17, dynamo=False)
    return count(path)["gmac"]


def test_bounded_translations_keep_crops_in_the_frame():
    """reg-stn-cpu(-fc): |τ| ≤ 1 − σ whatever the heads output; -fc starts at the paper's
    initial crops."""
    torch.manual_seed(0)
    m = build_model("reg-stn-cpu-fc").eval()
    with torch.no_grad():
        t1, t2, _ = m.thetas(torch.rand(2, 3, 224, 224))
    torch.testing.assert_close(t1[:, :, 2], torch.full((2, 2), 0.3))
    torch.testing.assert_close(t2[:, :, 2], torch.full((2, 2), 0.2))
    with torch.no_grad():
        m.translation.bias.fill_(50.0)
        m.translation.weight.normal_(0, 5)
        t1, t2, sigma = m.thetas(torch.rand(4, 3, 224, 224))
    for t, s in ((t1, sigma[:, 0]), (t2, sigma[:, 1])):
        assert (t[:, :, 2].abs() <= (1 - s)[:, None] + 1e-6).all()
    m = build_model("reg-stn-cpu").eval()
    with torch.no_grad():
        m.evidence.mlp[3].weight.normal_(0, 5)
        m.evidence.log_beta.fill_(5.0)
        t1, t2, sigma = m.thetas(torch.rand(4, 3, 224, 224))
    for t, s in ((t1, sigma[:, 0]), (t2, sigma[:, 1])):
        assert (t[:, :, 2].abs() <= (1 - s)[:, None] + 1e-6).all()
    with pytest.raises(ValueError, match="1 − σ"):
        from train.frame.models.stn import RegSTN
        RegSTN(bounded=True, trans_init=(0.6, 0.0, 0.0, 0.0))


def test_rotation_parametrisation_is_rotation_and_isotropic_scale():
    """reg-stn-cpu: θ's linear part is σ·R(α), |α| ≤ 30°: no shear, whatever the heads say."""
    import math

    torch.manual_seed(0)
    m = build_model("reg-stn-cpu").eval()
    with torch.no_grad():
        m.offdiag.weight.normal_(0, 3)
        m.scale.weight.normal_(0, 1)
        t1, t2, sigma = m.thetas(torch.rand(3, 3, 224, 224))
    for t, s in ((t1, sigma[:, 0]), (t2, sigma[:, 1])):
        a = t[:, :, :2]
        torch.testing.assert_close(a[:, 0, 0], a[:, 1, 1])  # σ cos α on the diagonal
        torch.testing.assert_close(a[:, 0, 1], -a[:, 1, 0])  # ∓σ sin α off it
        torch.testing.assert_close(torch.linalg.det(a).sqrt(), s)
        assert (torch.atan2(a[:, 1, 0], a[:, 0, 0]).abs() <= math.pi / 6 + 1e-6).all()


@pytest.mark.parametrize("name", ["reg-stn", "reg-stn-cpu", "reg-stn-cpu-wide"])
def test_scales_start_at_the_priors_targets_and_the_trainer_uses_them(name):
    from train.frame.config import TrainConfig
    from train.frame.trainer import _sord_kwargs
    from train.losses import total_loss

    spec = get_spec(name)
    assert spec.scale_targets == ((0.7, 0.9) if name.endswith("-wide") else (0.5, 0.75))
    torch.manual_seed(0)
    out = build_model(name).eval()(torch.rand(2, 3, 224, 224))
    torch.testing.assert_close(out["sigma"], torch.tensor([spec.scale_targets] * 2))
    kw = _sord_kwargs(TrainConfig(data="d", out="o", model=name))
    assert kw["prior_targets"] == spec.scale_targets
    _, parts = total_loss(out, torch.tensor([0, 2]), **kw)
    assert parts["prior"] == pytest.approx(0.0, abs=1e-5)  # at its own targets, not the paper's
    if name.endswith("-wide"):
        _, paper = total_loss(out, torch.tensor([0, 2]), "sord", True, True)
        assert paper["prior"] == pytest.approx(0.2 + 0.15, abs=1e-5)


def test_cli_help_lists_every_registered_model():
    from train.frame.train_cli import MODEL_NAMES

    assert sorted(MODEL_NAMES) == sorted(MODELS)
