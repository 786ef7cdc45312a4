"""cuda_ext: the torch reference against the numpy transform, the build arguments, and (on a GPU) the kernel
against the reference."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import cuda_ext
from cuda_ext import build, reference
from engine.gaussian_transform import quat_to_matrix, transform_gaussian_arrays


def random_matrices(rng: np.random.Generator, count: int, uniform: bool = True) -> np.ndarray:
    mats = np.tile(np.eye(4), (count, 1, 1))
    for i, m in enumerate(mats):
        r = quat_to_matrix(rng.normal(size=4))
        if i % 3 == 2:
            r = r @ np.diag([1.0, 1.0, -1.0])  # a mirrored object
        scale = np.full(3, rng.uniform(0.5, 2.0)) if uniform else rng.uniform(0.5, 2.0, size=3)
        m[:3, :3] = r @ np.diag(scale)
        m[:3, 3] = rng.uniform(-2.0, 2.0, size=3)
    return mats


def random_gaussians(rng: np.random.Generator, n: int, k: int, num_objects: int):
    means = rng.normal(size=(n, 3)).astype(np.float32)
    quats = (rng.normal(size=(n, 4)) * rng.uniform(0.5, 2.0, size=(n, 1))).astype(np.float32)
    log_scales = rng.uniform(-4.0, 0.5, size=(n, 3)).astype(np.float32)
    sh = (rng.normal(size=(n, k, 3)) * 0.3).astype(np.float32)
    index = rng.integers(0, num_objects, size=n).astype(np.int32)
    return means, quats, log_scales, sh, index


def numpy_per_object(arrays, index, mats, exact_covariance=True):
    outs = [np.empty_like(a) for a in arrays]
    for o, m in enumerate(mats):
        sel = index == o
        for out, part in zip(outs, transform_gaussian_arrays(*(a[sel] for a in arrays), m,
                                                             exact_covariance=exact_covariance)):
            out[sel] = part
    return outs


@pytest.mark.parametrize("k", [0, 3, 8, 15])
@pytest.mark.parametrize("uniform", [True, False])
def test_reference_matches_numpy_transform(k, uniform):
    rng = np.random.default_rng(k + 100 * uniform)
    *arrays, index = random_gaussians(rng, 2000, k, 4)
    mats = random_matrices(rng, 4, uniform)
    expected = numpy_per_object(arrays, index, mats, exact_covariance=False)
    params = torch.from_numpy(reference.pack_object_parameters(mats))
    got = reference.transform_gaussians_reference(*map(torch.from_numpy, arrays), torch.from_numpy(index), params)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g.numpy(), e, atol=1e-5)


def test_public_api_on_cpu_runs_the_reference_and_checks_indices():
    rng = np.random.default_rng(1)
    *arrays, index = random_gaussians(rng, 500, 15, 3)
    mats = random_matrices(rng, 3)
    tensors = [torch.from_numpy(a) for a in arrays]
    got = cuda_ext.transform_gaussians(*tensors, torch.from_numpy(index).long(), torch.from_numpy(mats))
    for e, g in zip(numpy_per_object(arrays, index, mats), got):
        np.testing.assert_allclose(g.numpy(), e, atol=1e-5)
    single = cuda_ext.transform_gaussians(*tensors, None, mats[1])
    for e, g in zip(transform_gaussian_arrays(*arrays, mats[1]), single):
        np.testing.assert_allclose(g.numpy(), e, atol=1e-5)
    with pytest.raises(ValueError, match="outside 0..2"):
        cuda_ext.transform_gaussians(*tensors, torch.full((500,), 3), mats)
    with pytest.raises(ValueError, match="object_index is needed"):
        cuda_ext.transform_gaussians(*tensors, None, mats)


def test_reference_leaves_gaussians_with_invalid_index_unchanged():
    rng = np.random.default_rng(2)
    *arrays, index = random_gaussians(rng, 50, 8, 2)
    index[:5] = [-1, 2, 7, -3, 2]
    params = torch.from_numpy(reference.pack_object_parameters(random_matrices(rng, 2)))
    got = reference.transform_gaussians_reference(*map(torch.from_numpy, arrays), torch.from_numpy(index), params)
    for a, g in zip(arrays, got):
        assert torch.equal(g[:5], torch.from_numpy(a[:5]))
        assert not torch.equal(g[5:], torch.from_numpy(a[5:]))


def test_kernel_parameter_layout_matches_reference():
    source = (build.CSRC / "transform_gaussians.cu").read_text()
    header = (build.CSRC / "transform_gaussians.h").read_text()
    offsets = {name: int(value) for name, value in re.findall(r"constexpr int k(\w+) = (\d+);", source)}
    assert {"Linear": reference.LINEAR, "Translation": reference.TRANSLATION, "Quat": reference.QUAT,
            "LogScale": reference.LOG_SCALE, "D1": reference.D1, "D2": reference.D2,
            "D3": reference.D3}.items() <= offsets.items()
    assert f"kParamsPerObject = {reference.PARAMS_PER_OBJECT};" in header


def test_compile_arguments(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    args = build.compile_arguments((9, 0), "2.11.0+cu130", "13.0")
    assert args["arch_list"] == "9.0"
    assert args["name"] == build.EXTENSION_NAME
    assert all(p.endswith((".cpp", ".cu")) and __import__("os").path.exists(p) for p in args["sources"])
    assert args["build_directory"] == str(tmp_path / f"{build.EXTENSION_NAME}_torch2.11.0_cu130_sm90")
    assert "-O3" in args["extra_cuda_cflags"] and "--use_fast_math" not in args["extra_cuda_cflags"]
    assert args["extra_include_paths"] == [str(build.CSRC)]
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6 9.0+PTX")
    args = build.compile_arguments((9, 0), "2.11.0", None)
    assert args["arch_list"] == "8.6 9.0+PTX"
    assert args["build_directory"].endswith("_torch2.11.0_cunone_sm86-90ptx")
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    assert build.build_root() == __import__("pathlib").Path.home() / ".cache/animate_gaussians/torch_extensions"
    with pytest.raises(RuntimeError, match="TORCH_CUDA_ARCH_LIST"):
        build.compile_arguments(None, "2.11.0", None)


def test_available_is_false_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert cuda_ext.available() is False


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item() if a.numel() else 0.0


@pytest.mark.gpu
def test_extension_builds():
    assert cuda_ext.available(), "the CUDA extension did not build"


@pytest.mark.gpu
@pytest.mark.parametrize("k", [0, 3, 8, 15])
def test_kernel_matches_reference(k):
    rng = np.random.default_rng(k)
    *arrays, index = random_gaussians(rng, 100_000, k, 5)
    mats = random_matrices(rng, 5)
    mats[3] = np.eye(4)
    tensors = [torch.from_numpy(a).cuda() for a in arrays]
    idx = torch.from_numpy(index).cuda()
    params = torch.from_numpy(reference.pack_object_parameters(mats)).cuda()
    expected = reference.transform_gaussians_reference(*tensors, idx, params)
    got = build.load_extension().transform_gaussians(*tensors, idx, params)
    for e, g in zip(expected, got):
        assert max_abs_diff(g, e) <= 1e-5
    api = cuda_ext.transform_gaussians(*tensors, idx, mats)
    for e, g in zip(expected, api):
        assert max_abs_diff(g, e) <= 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("k", [3, 8, 15])
def test_kernel_many_objects_odd_count_and_unaligned_sh(k):
    # 70 objects: parameters read from global memory; N not a multiple of the block; SH 4 bytes off alignment.
    rng = np.random.default_rng(50 + k)
    n = 10_001
    *arrays, index = random_gaussians(rng, n, k, 70)
    mats = random_matrices(rng, 70)
    tensors = [torch.from_numpy(a).cuda() for a in arrays]
    flat = torch.empty(n * k * 3 + 1, device="cuda")
    tensors[3] = flat[1:].view(n, k, 3)
    tensors[3].copy_(torch.from_numpy(arrays[3]))
    assert tensors[3].data_ptr() % 16 != 0 and tensors[3].is_contiguous()
    idx = torch.from_numpy(index).cuda()
    params = torch.from_numpy(reference.pack_object_parameters(mats)).cuda()
    expected = reference.transform_gaussians_reference(*tensors, idx, params)
    got = build.load_extension().transform_gaussians(*tensors, idx, params)
    for e, g in zip(expected, got):
        assert max_abs_diff(g, e) <= 1e-5
    bad = idx.clone()
    bad[:3] = torch.tensor([-1, 70, 1000], dtype=torch.int32)
    got = build.load_extension().transform_gaussians(*tensors, bad, params)
    for t, g in zip(tensors, got):
        assert torch.equal(g[:3], t[:3])
