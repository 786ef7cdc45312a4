"""The 4D query's relevancy kernel (cuda_ext.lerf_relevancy) against its torch reference, and Otsu's cut
counting only the non-zero values against the histogram it replaced.

The kernel must give the reference's bits, not values near them: tests/test_query4d_cached.py holds whole
answers to the bit on CUDA too. It can, because it repeats the reference's roundings step by step: the
float16 products come from the same tensor-core operation as the reference's cuBLAS GEMM (m16n8k16, float32
accumulation from zero, rounded to float16), the float32 steps after it are single IEEE operations in the
same order, and the sigmoid is torch's formula, 1 / (1 + expf(-x)). A mismatch is counted in the message."""

from __future__ import annotations

import pytest
import torch

import cuda_ext
from cuda_ext import build
from cuda_ext.reference import lerf_relevancy_reference
from engine.query4d.query import otsu_cut, otsu_threshold


def random_inputs(steps: int, count: int, d: int, texts: int, seed: int, device: str = "cpu",
                  dtype: torch.dtype = torch.float32):
    """Unit codes (a few never seen, zero as the field stores them), text directions near some codes, the
    offsets and inverse norms of an affine decoder of the codes."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.nn.functional.normalize(torch.randn(steps, count, d, generator=g), dim=-1)
    unseen = torch.rand(steps, count, generator=g) < 0.05
    codes = (codes * ~unseen[..., None]).half()
    A, b = torch.randn(64, d, generator=g) / d ** 0.5, torch.randn(64, generator=g) * 0.01
    words = A @ codes[0, :texts].float().T + b[:, None] + 0.3 * torch.randn(64, texts, generator=g)
    proj, offs = (words.T @ A).T.contiguous(), words.T @ b                         # (d, texts), (texts,)
    z = codes.float()
    inverse = torch.rsqrt((((z @ A.T) + b) ** 2).sum(-1).clamp_min(1e-12))
    return tuple(t.to(device) for t in (codes, proj.to(dtype), offs, inverse, unseen))


def direct_relevancy(codes, proj, offs, inverse, unseen) -> torch.Tensor:
    """LERF's definition in float64: min over negatives of softmax([c0, ck])[0]."""
    cos = (codes.double() @ proj.double() + offs.double()) * inverse.double()[..., None]
    pair = torch.stack([cos[..., :1].expand_as(cos[..., 1:]), cos[..., 1:]], -1) * 10.0
    rel = torch.softmax(pair, -1)[..., 0].amin(-1)
    return rel.masked_fill(unseen, 0.5)


@pytest.mark.parametrize("block", [1, 3, None])
def test_blocks_of_the_reference_are_the_reference_and_lerf_relevancy(block):
    inputs = random_inputs(7, 301, 16, 5, seed=1)
    whole = lerf_relevancy_reference(*inputs)
    got = cuda_ext.lerf_relevancy(*inputs, block=block)
    assert got.dtype == torch.float16 and got.shape == (7, 301)
    assert torch.equal(got, whole)
    # Float32 products on the CPU: within float16 rounding of LERF's own definition.
    assert (got.double() - direct_relevancy(*inputs)).abs().max() <= 1e-3
    assert (got[inputs[4]] == 0.5).all() and 0.5 < got.float().max() and got.float().min() < 0.5


def old_otsu_threshold(values: torch.Tensor, bins: int = 128) -> float:
    """The cut as made before (ignore_zeros): every value into histc, then the zeros taken off the first bin."""
    hist = torch.histc(values.float(), bins=bins, min=0.0, max=1.0).double()
    hist[0] -= float((values == 0).sum())
    if hist.sum() == 0:
        return 1.0
    p = hist / hist.sum()
    centres = (torch.arange(bins, dtype=torch.float64, device=values.device) + 0.5) / bins
    w0 = p.cumsum(0)
    mu0 = (p * centres).cumsum(0)
    between = (mu0[-1] * w0 - mu0) ** 2 / (w0 * (1 - w0)).clamp_min(1e-12)
    return float((torch.argmax(between[:-1]) + 1) / bins)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_otsu_without_the_zeros_is_the_same_cut(device):
    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        values = torch.zeros(40, 2000)
        n = int(torch.randint(1, 4000, (1,), generator=g))
        low, high = torch.rand(n // 2, generator=g) * 0.4, 0.6 + torch.rand(n - n // 2, generator=g) * 0.4
        values.view(-1)[torch.randperm(values.numel(), generator=g)[:n]] = torch.cat([low, high])
        values[0, :3] = torch.tensor([1.0, 1.0 / 128, -0.0])   # the top edge, a bin edge, a negative zero
        values = values.to(device)
        want = old_otsu_threshold(values)
        assert otsu_threshold(values, ignore_zeros=True) == want
        cut = otsu_cut(values, ignore_zeros=True)
        assert cut.dtype == torch.float32 and cut.device.type == device and float(cut) == want
        assert 0.25 < want < 0.65, trial       # between the two groups
    nothing = torch.zeros(10, 10, device=device)
    assert otsu_threshold(nothing, ignore_zeros=True) == old_otsu_threshold(nothing) == 1.0


CASES = [(16, 5), (8, 5), (16, 4), (12, 9), (32, 17), (64, 32), (2, 2), (48, 8)]   # (code width, texts)


@pytest.mark.gpu
@pytest.mark.parametrize("d,texts", CASES)
def test_kernel_gives_the_references_bits(d, texts):
    # 1001 Gaussians: the last tile of 16 codes is partial; 5% unseen; text counts across 1, 2 and 4 n-tiles.
    codes, proj, offs, inverse, unseen = random_inputs(9, 1001, d, texts, seed=d * 100 + texts, device="cuda",
                                                       dtype=torch.float16)
    want = lerf_relevancy_reference(codes, proj, offs, inverse, unseen)
    got = build.load_extension().lerf_relevancy(codes, proj.T.contiguous(), offs, inverse, unseen)
    differ = got != want
    assert not differ.any(), (f"{int(differ.sum())} of {differ.numel()} differ, by at most "
                              f"{(got.float() - want.float()).abs().max().item():.2e}; "
                              + gemm_shape_diagnosis(codes, proj, offs, inverse, unseen, got))
    assert (got[unseen] == 0.5).all()


def gemm_shape_diagnosis(codes, proj, offs, inverse, unseen, got) -> str:
    """Whether the reference's own float16 products change when cuBLAS multiplies the same codes as part of a
    GEMM of the query's size (2M rows, where the H200 profile shows its tensor-core kernel), and whether the
    kernel matches the reference made from those."""
    z = codes.reshape(-1, codes.shape[-1]).to(proj.dtype)
    big = torch.cat([z, z.new_zeros(2_000_000, z.shape[1])]) @ proj
    changed = int((z @ proj != big[:len(z)]).sum())
    products = big[:len(z)].view(*codes.shape[:2], -1)
    cos = products.float().add_(offs).mul_(inverse[..., None])
    from_big = torch.sigmoid((cos[..., 0] - cos[..., 1:].amax(-1)).mul_(10.0)).masked_fill_(unseen, 0.5).half()
    return (f"torch's products differ between a {len(z)}-row and a {len(z) + 2_000_000}-row GEMM in "
            f"{changed} of {big[:len(z)].numel()}; the kernel differs from the reference "
            f"made of the large GEMM's products in {int((got != from_big).sum())}")


@pytest.mark.gpu
def test_public_api_runs_the_kernel_on_unaligned_and_large_inputs(monkeypatch):
    codes, proj, offs, inverse, unseen = random_inputs(40, 50_000, 16, 5, seed=9, device="cuda",
                                                       dtype=torch.float16)
    assert cuda_ext.available()
    # The kernel itself on the whole field: the API's blocks and its copy of misaligned codes must give these
    # bits. (Against the torch reference the kernel is exact where cuBLAS keeps its algorithm; for this 2M-row
    # product it picked another one on the H200 and a few products rounded apart, so that is held to a few values
    # apart, each by what a product's last fp16 bit moves a sigmoid of slope 10 times its inverse norm.)
    want = build.load_extension().lerf_relevancy(codes, proj.T.contiguous(), offs, inverse, unseen)
    reference = lerf_relevancy_reference(codes, proj, offs, inverse, unseen)
    apart = want != reference
    assert float(apart.float().mean()) < 1e-3 and (want.float() - reference.float()).abs().max() <= 0.05

    def no_reference(*args):
        raise AssertionError("the torch reference ran instead of the kernel")

    monkeypatch.setattr(cuda_ext, "lerf_relevancy_reference", no_reference)
    assert torch.equal(cuda_ext.lerf_relevancy(codes, proj, offs, inverse, unseen, block=3), want)
    flat = torch.empty(codes.numel() + 1, dtype=torch.float16, device="cuda")
    shifted = flat[1:].view(codes.shape)            # 2 bytes off: the API copies it to read pairs
    shifted.copy_(codes)
    assert shifted.data_ptr() % 4 != 0
    assert torch.equal(cuda_ext.lerf_relevancy(shifted, proj, offs, inverse, unseen), want)
    monkeypatch.undo()
    from engine import fallbacks
    with fallbacks.collecting() as said:
        wide = random_inputs(2, 100, 66, 3, seed=2, device="cuda", dtype=torch.float16)
        assert torch.equal(cuda_ext.lerf_relevancy(*wide), lerf_relevancy_reference(*wide))
    assert [w["code"] for w in said] == ["cuda_ext_reference"] and "code widths" in said[0]["message"]


@pytest.mark.gpu
def test_the_query_takes_the_kernel_on_a_gpu_field(monkeypatch):
    from engine.query4d.query import query_embeddings
    from tests.test_query4d_cached import small_field

    field, positive, negatives = small_field(3000, 30, 1, seed=1, device="cuda")
    monkeypatch.setattr(cuda_ext, "lerf_relevancy_reference",
                        lambda *a: pytest.fail("the torch reference ran instead of the kernel"))
    assert query_embeddings(field, positive, negatives).matched
