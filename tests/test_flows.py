"""Flow layers: reported log |det| against autograd, inverses, and planar invertibility."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor

from tests.conftest import sized_option, subclass_options
from vae_lab.components.posteriors.flow import FlowLayer, FlowPosterior, FlowTransform
from vae_lab.components.posteriors.iaf import IAFLayer
from vae_lab.components.posteriors.planar import PlanarTransform
from vae_lab.components.posteriors.residual import MIN_SLOPE
from vae_lab.components.posteriors.sylvester import SylvesterLayer

DIM, CONTEXT, HIDDEN = 5, 3, 16  # an odd D: the coupling halves differ in size
#: the flow posteriors' options (conf/posterior/), two small layers each: coupling and
#: autoregressive flows alternate the variable order, so both orders are tested
FLOWS = subclass_options("posterior", FlowPosterior)
SIZES = {"num_flows": 2, "context_dim": CONTEXT, "hidden_dim": HIDDEN, "num_householder": 3}

pytestmark = pytest.mark.usefixtures("single_thread")  # many small tensor ops


def flow_layer(option: str, index: int) -> FlowLayer:
    """Layer ``index`` of the flow posterior ``option`` with the small SIZES, on R^DIM."""
    family = instantiate(sized_option("posterior", option, SIZES), feature_dim=8, latent_dim=DIM)
    return family.layers[index]


LAYERS: dict[str, Callable[[], FlowLayer]] = {
    f"{option}_{index}": functools.partial(flow_layer, option, index)
    for option in FLOWS
    for index in range(SIZES["num_flows"])
}


def random_transform(kind: str, batch: int, seed: int) -> FlowTransform:
    """A layer in float64 with random shared weights, applied to random raw parameters."""
    torch.manual_seed(seed)
    layer = LAYERS[kind]().double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.5)
    return layer(torch.randn(batch, layer.num_params, dtype=torch.float64))


def per_point_jacobians(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The [S, B, D, D] Jacobians of f at x [S, B, D]; asserts f does not mix points."""
    s, b, d = x.shape
    full = torch.autograd.functional.jacobian(f, x).reshape(s * b, d, s * b, d)
    index = torch.arange(s * b)
    blocks = full[index, :, index, :]
    full[index, :, index, :] = 0.0
    assert torch.equal(full, torch.zeros_like(full)), "a point's output depends on another's"
    return blocks.reshape(s, b, d, d)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("seed", [0, 1])
def test_log_det_matches_autograd_jacobian(kind, seed):
    transform = random_transform(kind, batch=3, seed=seed)
    x = 1.5 * torch.randn(2, 3, DIM, dtype=torch.float64)
    y, log_det = transform.forward_and_log_det(x)
    jac = per_point_jacobians(lambda v: transform.forward_and_log_det(v)[0], x)
    assert torch.allclose(log_det, torch.linalg.slogdet(jac).logabsdet, rtol=0, atol=1e-6)
    assert torch.equal(transform(x), y)
    assert torch.equal(transform.log_abs_det_jacobian(x, y), log_det)
    assert log_det.abs().max() > 1e-2  # the random layer is far from the identity


@pytest.mark.parametrize("kind", LAYERS)
def test_inverse_recovers_the_input(kind):
    transform = random_transform(kind, batch=4, seed=0)
    x = 1.5 * torch.randn(6, 4, DIM, dtype=torch.float64)
    assert torch.allclose(transform.inv(transform(x)), x, rtol=0, atol=1e-9)


def _adversarial_cases() -> list[tuple[float, float, float]]:
    """(scale of w, kappa, b) with raw w^T u = -kappa <= -1: a non-invertible raw layer."""
    return [
        (sw, kappa, b) for sw in (1e-3, 1.0, 1e3) for kappa in (1.0, 50.0, 1e4) for b in (0.0, 30.0)
    ]


@pytest.mark.parametrize(("w_scale", "kappa", "b"), _adversarial_cases())
def test_planar_layer_is_monotone_along_w_for_adversarial_parameters(w_scale, kappa, b):
    torch.manual_seed(0)
    batch = 4
    w = w_scale * torch.randn(batch, DIM, dtype=torch.float64)
    w_norm_sq = (w * w).sum(-1, keepdim=True)
    noise = torch.randn(batch, DIM, dtype=torch.float64)
    noise = noise - (noise * w).sum(-1, keepdim=True) / w_norm_sq * w  # orthogonal to w
    u = -kappa * w / w_norm_sq + 10.0 * noise
    assert torch.allclose((w * u).sum(-1), torch.full((batch,), -kappa, dtype=torch.float64))
    transform = PlanarTransform(u, w, torch.full((batch,), b, dtype=torch.float64))

    assert ((transform.u_hat * w).sum(-1) >= -1.0).all()
    # along the line z0 + t w, the coordinate s = w^T z + b of f(z) must not decrease
    s = torch.linspace(-b - 20.0, -b + 20.0, 4001, dtype=torch.float64)[:, None]
    z0 = torch.randn(batch, DIM, dtype=torch.float64)
    z = z0 + ((s - b - (w * z0).sum(-1)) / w_norm_sq.squeeze(-1)).unsqueeze(-1) * w
    y, log_det = transform.forward_and_log_det(z)
    s_out = (y * w).sum(-1) + b
    assert (s_out.diff(dim=0) >= -1e-9 * s_out.abs().amax(0)).all()
    assert (log_det >= math.log(MIN_SLOPE) - 1e-12).all()


def test_planar_layer_with_zero_w_is_a_shift():
    u = torch.randn(2, DIM, dtype=torch.float64)
    b = torch.tensor([0.3, -2.0], dtype=torch.float64)
    transform = PlanarTransform(u, torch.zeros_like(u), b)
    z = torch.randn(7, 2, DIM, dtype=torch.float64)
    y, log_det = transform.forward_and_log_det(z)
    assert torch.allclose(y, z + u * torch.tanh(b)[:, None])
    assert torch.allclose(log_det, torch.zeros_like(log_det), rtol=0, atol=1e-12)  # m(0) ~ 0


@pytest.mark.parametrize("reverse", [False, True])
def test_iaf_outputs_depend_only_on_earlier_coordinates(reverse):
    torch.manual_seed(0)
    layer = IAFLayer(DIM, CONTEXT, HIDDEN, reverse=reverse).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.5)
    context = torch.randn(1, CONTEXT, dtype=torch.float64)
    x = torch.randn(1, DIM, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: layer.made(v, context), x)[0, :, 0, :]
    order = torch.arange(DIM).flip(0) if reverse else torch.arange(DIM)
    rank = torch.empty(DIM, dtype=torch.long)
    rank[order] = torch.arange(DIM)
    for block in jac.split(DIM):
        allowed = rank[None, :] < rank[:, None]  # output i may see input j iff j precedes i
        assert torch.equal(block[~allowed], torch.zeros_like(block[~allowed]))
        assert (block[allowed] != 0).all()


def test_sylvester_layer_with_saturated_diagonals_stays_invertible():
    """R_ii -> 1, R~_ii -> -1 (tanh saturated): the slope along each coordinate keeps delta."""
    torch.manual_seed(0)
    layer = SylvesterLayer(DIM, num_householder=3).double()
    params = torch.randn(2, layer.num_params, dtype=torch.float64)
    r_diag, _, rt_diag, *_ = params.split(layer.sizes, dim=-1)
    r_diag.fill_(50.0)
    rt_diag.fill_(-50.0)
    transform = layer(params)
    x = torch.randn(100, 2, DIM, dtype=torch.float64)
    y, log_det = transform.forward_and_log_det(x)
    assert (log_det >= DIM * math.log(MIN_SLOPE) - 1e-9).all()
    # the inverse is ill-conditioned here (slopes ~ delta), so check its backward error
    assert torch.allclose(transform(transform.inv(y)), y, rtol=0, atol=1e-12)
