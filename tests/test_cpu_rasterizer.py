"""The pure-torch rasterizer and SH evaluation: analytic values, depth, ordering, SH, features, a real scene."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.cameras import intrinsics_from_fov, look_at, project_points
from engine.render import render_gaussians
from engine.render.sh import SH_C1, sh_basis, sh_to_color

IDENTITY = np.eye(4)


def _render(means, scales, opacities, colors, width=48, height=40, viewmat=IDENTITY, K=None, quats=None, **kw):
    means = np.asarray(means, np.float32).reshape(-1, 3)
    n = len(means)
    if K is None:
        K = np.array([[40.0, 0, width / 2], [0, 40.0, height / 2], [0, 0, 1]])
    if quats is None:
        quats = np.tile([1.0, 0, 0, 0], (n, 1))
    scales = np.broadcast_to(np.asarray(scales, np.float32).reshape(-1, 1) if np.ndim(scales) <= 1
                             else np.asarray(scales, np.float32), (n, 3))
    return render_gaussians(means, quats, scales, np.asarray(opacities, np.float32).reshape(n), colors,
                            viewmat, K, width, height, backend="cpu", **kw)


def test_single_gaussian_peak_and_falloff_are_analytic():
    W, H, f = 48, 40, 40.0
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    z, s, o = 3.0, 0.05, 0.8
    u, v = 30.5, 11.5                         # centre of pixel (row 11, column 30)
    x, y = (u - K[0, 2]) / f * z, (v - K[1, 2]) / f * z
    out = _render([x, y, z], [s], [o], np.array([[0.2, 0.6, 1.0]]), W, H, K=K)
    # Σ2d = J (s² I) Jᵀ + 0.3 I with J the perspective Jacobian at the mean.
    J = np.array([[f / z, 0, -f * x / z ** 2], [0, f / z, -f * y / z ** 2]])
    cov = s * s * J @ J.T + 0.3 * np.eye(2)
    inv = np.linalg.inv(cov)
    alpha = out.alpha.numpy()
    assert np.unravel_index(alpha.argmax(), alpha.shape) == (11, 30)
    assert alpha[11, 30] == pytest.approx(o, rel=1e-5)
    assert out.rgb[11, 30].numpy() == pytest.approx(o * np.array([0.2, 0.6, 1.0]), rel=1e-5)
    for dr, dc in [(0, 1), (1, 0), (1, 1), (-2, 1), (0, -3)]:
        d = np.array([dc, dr], float)
        expected = o * math.exp(-0.5 * d @ inv @ d)
        got = alpha[11 + dr, 30 + dc]
        if expected < 1 / 255:
            assert got == 0.0
        else:
            assert got == pytest.approx(expected, rel=1e-4)
    assert out.depth[11, 30].item() == pytest.approx(z, rel=1e-6)


def test_opaque_plane_depth_equals_its_distance():
    # A fronto-parallel wall of overlapping flat Gaussians at z = 2.5.
    g = np.linspace(-1.5, 1.5, 31)
    xx, yy = np.meshgrid(g, g)
    means = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, 2.5)], axis=1)
    scales = np.tile([0.08, 0.08, 0.002], (len(means), 1))
    out = _render(means, scales, np.full(len(means), 0.99), np.full((len(means), 3), 0.5), 40, 32)
    assert out.alpha.min().item() > 0.999
    assert torch.allclose(out.depth, torch.full_like(out.depth, 2.5), rtol=1e-5)


def test_near_gaussian_covers_far_one_whatever_the_input_order():
    means = [[0.0, 0.0, 2.0], [0.0, 0.0, 4.0]]
    colors = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for order in ([0, 1], [1, 0]):
        K = np.array([[40.0, 0, 16.5], [0, 40.0, 16.5], [0, 0, 1]])   # both on pixel (16, 16)'s centre
        opacities = np.array([0.99, 0.9])[order]
        out = _render(np.array(means)[order], [0.5, 0.5], opacities, colors[order], 32, 32, K=K)
        centre = out.rgb[16, 16].numpy()
        assert centre[0] == pytest.approx(0.99, abs=1e-4)
        assert centre[2] == pytest.approx(0.01 * 0.9, abs=1e-4)
        # Expected depth weights the two by their contributions.
        assert out.depth[16, 16].item() == pytest.approx((0.99 * 2 + 0.009 * 4) / 0.999, rel=1e-4)


def test_transmittance_stop_and_background():
    # Five layers of alpha 0.999: after the first, T = 0.001; the second would take it to 1e-6 <= 1e-4, so
    # gsplat's rule stops the pixel before it and only the first layer is composited.
    means = [[0.0, 0.0, 2.0 + i] for i in range(5)]
    colors = np.eye(3)[[0, 1, 2, 0, 1]]
    K = np.array([[20.0, 0, 8.5], [0, 20.0, 8.5], [0, 0, 1]])
    out = _render(means, [1.0] * 5, [0.999] * 5, colors, 16, 16, K=K, background=[0.0, 0.0, 1.0])
    rgb = out.rgb[8, 8].numpy()
    assert rgb[0] == pytest.approx(0.999, abs=1e-5)       # only layer 1 composited
    assert rgb[1] == pytest.approx(0.0, abs=1e-6)
    assert rgb[2] == pytest.approx(0.001, abs=1e-5)       # background through T = 0.001
    assert out.alpha[8, 8].item() == pytest.approx(0.999, abs=1e-5)
    empty = _render([[0.0, 0.0, 2.0]], [0.01], [0.9], np.ones((1, 3)), 16, 16, background=[0.1, 0.2, 0.3])
    corner = empty.rgb[0, 0].numpy()
    assert corner == pytest.approx([0.1, 0.2, 0.3]) and empty.alpha[0, 0] == 0 and empty.depth[0, 0] == 0


def test_near_far_and_behind_camera_are_culled():
    out = _render([[0.0, 0.0, 0.5], [0.0, 0.0, -2.0]], [0.3, 0.3], [0.9, 0.9], np.ones((2, 3)), 16, 16,
                  near=1.0)
    assert out.alpha.max().item() == 0.0
    out = _render([[0.0, 0.0, 5.0]], [0.3], [0.9], np.ones((1, 3)), 16, 16, far=4.0)
    assert out.alpha.max().item() == 0.0


def _sloan_basis(dirs: np.ndarray) -> np.ndarray:
    """gsplat's own (Sloan's) form of the degree-3 basis, written independently of engine.render.sh."""
    x, y, z = dirs.T
    r = np.zeros((len(dirs), 16))
    r[:, 0] = 0.2820947917738781
    a = -0.48860251190292
    r[:, 2], r[:, 3], r[:, 1] = -a * z, a * x, a * y
    z2 = z * z
    b, a = -1.092548430592079 * z, 0.5462742152960395
    c1, s1 = x * x - y * y, 2 * x * y
    r[:, 6] = 0.9461746957575601 * z2 - 0.3153915652525201
    r[:, 7], r[:, 5], r[:, 8], r[:, 4] = b * x, b * y, a * c1, a * s1
    c = -2.285228997322329 * z2 + 0.4570457994644658
    b, a = 1.445305721320277 * z, -0.5900435899266435
    c2, s2 = x * c1 - y * s1, x * s1 + y * c1
    r[:, 12] = z * (1.865881662950577 * z2 - 1.119528997770346)
    r[:, 13], r[:, 11], r[:, 14], r[:, 10], r[:, 15], r[:, 9] = c * x, c * y, b * c1, b * s1, a * c2, a * s2
    return r


def test_sh_basis_matches_gsplat_form_and_is_orthonormal():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(2000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    ours = sh_basis(3, torch.as_tensor(d)).numpy()
    assert ours == pytest.approx(_sloan_basis(d), abs=1e-12)
    assert sh_basis(1, torch.tensor([[0.0, 1.0, 0.0]])).numpy()[0] == pytest.approx([0.28209479, -SH_C1, 0, 0])
    # Monte-Carlo orthonormality on the sphere: ∫ Y_i Y_j dΩ = δ_ij.
    d = rng.normal(size=(400_000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    Y = sh_basis(3, torch.as_tensor(d)).numpy()
    gram = 4 * np.pi * Y.T @ Y / len(d)
    assert gram == pytest.approx(np.eye(16), abs=0.02)


def test_sh_degree_one_colour_follows_view_direction():
    coeffs = np.zeros((1, 4, 3))
    coeffs[0, 3, 0] = 1.0                     # red varies with −C1·x of the viewing direction
    K = intrinsics_from_fov(32, 32, 40.0)
    K[:2, 2] = 16.5                          # the Gaussian lands on the centre of pixel (16, 16)
    peaks = {}
    for side in (-1.0, 1.0):
        eye = np.array([side * 3.0, 0.0, 0.0])
        viewmat = look_at(eye, np.zeros(3), up=(0.0, 0.0, 1.0))
        out = _render([[0.0, 0.0, 0.0]], [0.2], [0.9], coeffs, 32, 32, viewmat=viewmat, K=K, sh_degree=1)
        dir_x = -side                           # unit direction camera -> Gaussian
        expected_red = max(-SH_C1 * dir_x + 0.5, 0.0) * 0.9
        peaks[side] = out.rgb[16, 16, 0].item()
        assert peaks[side] == pytest.approx(expected_red, rel=1e-4)
    assert peaks[1.0] > 0.85 and peaks[-1.0] < 0.02
    # And sh_to_color agrees with the basis directly.
    c = sh_to_color(1, torch.as_tensor(coeffs[0]), torch.tensor([-5.0, 0.0, 0.0]))
    assert c.numpy() == pytest.approx([SH_C1 + 0.5, 0.5, 0.5])


def test_features_equal_colours_when_given_the_colours(primitives_scene):
    g = primitives_scene.gaussians
    viewmat = look_at([0.0, -2.0, -4.0], [0.0, -0.3, 0.0], up=(0.0, -1.0, 0.0))
    K = intrinsics_from_fov(64, 48, 60.0)
    colors = g.colors()
    out = render_gaussians(g.means, g.quats_wxyz, np.exp(g.log_scales), g.opacities(), colors, viewmat, K,
                           64, 48, features=colors, background=[0.3, 0.3, 0.3], backend="cpu")
    covered = out.alpha > 0
    assert covered.float().mean() > 0.3
    expected = out.rgb - (1 - out.alpha[..., None]) * 0.3
    assert torch.allclose(out.features, expected, atol=1e-5)


def test_primitives_scene_labels_render_where_objects_are(primitives_scene):
    scene = primitives_scene
    g = scene.gaussians
    W, H = 96, 72
    viewmat = look_at([0.0, -2.5, -4.0], [0.0, -0.3, 0.0], up=(0.0, -1.0, 0.0))
    K = intrinsics_from_fov(W, H, 60.0)
    onehot = np.eye(4, dtype=np.float32)[scene.labels]
    sh = np.concatenate([g.sh_dc[:, None], g.sh_rest], axis=1)
    out = render_gaussians(g.means, g.quats_wxyz, np.exp(g.log_scales), g.opacities(), sh, viewmat, K, W, H,
                           features=onehot, backend="cpu")
    label_image = out.features.argmax(-1).numpy()
    for obj in scene.objects[1:]:
        uv, depth = project_points(obj.center[None], viewmat, K)
        row, col = int(uv[0, 1]), int(uv[0, 0])
        assert label_image[row, col] == obj.label, obj.name
        # Its colour dominates there, and the depth is in front of the centre by about the radius.
        rgb = out.rgb[row, col].numpy()
        assert int(np.argmax(rgb)) == int(np.argmax(obj.color)), obj.name
        assert depth[0] - obj.size * 0.75 < out.depth[row, col].item() < depth[0]


def test_gradients_flow_and_match_finite_differences():
    rng = np.random.default_rng(3)
    n = 4
    # Wide Gaussians near the axis: inside the 8×8 window every alpha is far above the 1/255 cut-off and
    # transmittance stays above 1e-4, so the loss there is smooth and finite differences are meaningful.
    means = torch.tensor(np.column_stack([rng.uniform(-0.1, 0.1, (n, 2)), rng.uniform(2, 3, n)]),
                         dtype=torch.float32, requires_grad=True)
    scales = torch.tensor(rng.uniform(0.25, 0.4, (n, 3)), dtype=torch.float32, requires_grad=True)
    quats = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32, requires_grad=True)
    opac = torch.full((n,), 0.6, requires_grad=True)
    colors = torch.tensor(rng.uniform(size=(n, 3)), dtype=torch.float32, requires_grad=True)
    K = torch.tensor([[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]])
    weight = torch.tensor(rng.uniform(size=(8, 8, 3)), dtype=torch.float32)

    def loss(m, s):
        out = render_gaussians(m, quats, s, opac, colors, torch.eye(4), K, 32, 32, backend="cpu")
        return (out.rgb[12:20, 12:20] * weight).sum() + out.depth[12:20, 12:20].sum()

    loss(means, scales).backward()
    for t in (means, scales, quats, opac, colors):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    eps = 1e-3
    for tensor, other in ((means, scales), (scales, means)):
        direction = torch.tensor(rng.normal(size=tuple(tensor.shape)), dtype=torch.float32)
        with torch.no_grad():
            if tensor is means:
                fd = (loss(means + eps * direction, scales) - loss(means - eps * direction, scales)) / (2 * eps)
            else:
                fd = (loss(means, scales + eps * direction) - loss(means, scales - eps * direction)) / (2 * eps)
        analytic = (tensor.grad * direction).sum()
        assert analytic.item() == pytest.approx(fd.item(), rel=0.02, abs=1e-2)
