// Fused LERF relevancy of a 4D query: for every code z (one Gaussian at one timestep), the 1 + K products with
// the texts' directions, plus their offsets, times the code's inverse norm, then sigmoid(10 (c0 - max ck)),
// 0.5 where unseen, written as float16. One read of each code; nothing intermediate touches memory.
//
// It returns the torch reference's bits (cuda_ext/reference.py lerf_relevancy_reference), so it repeats that
// code's roundings step by step: the products come from the tensor cores (mma.sync m16n8k16, float32
// accumulation from zero, as cuBLAS's half-precision GEMM computes them) and are rounded to float16 (the GEMM's
// output type); then float32 add, multiply, subtract, multiply by 10 and 1 / (1 + expf(-x)) with IEEE
// rounding (the _rn intrinsics keep the compiler from fusing them into FMAs, which would round differently).
//
// One warp computes 16 codes per MMA (the tile's rows) against 8 texts per n-tile; codes are read straight
// from global memory into the MMA's A fragments (4-byte loads; each 32-byte code row is one sector, so DRAM
// traffic is just the codes). Each warp takes two tiles per step, so that their loads are in flight together
// and every lane finishes one of their 32 rows.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>
#include <cstdint>

#include "lerf_relevancy.h"

namespace {

constexpr int kWarps = 8;
constexpr int kTilesPerIter = 2;   // the four quads of a warp finish two tiles' 32 rows
static_assert(kTilesPerIter == 2, "the finishing lanes pick their row by selects written for two tiles");
constexpr unsigned kFullMask = 0xffffffffu;

// torch's amax: NaN wins.
__device__ __forceinline__ float max_keeping_nan(float a, float b) { return (a != a || a > b) ? a : b; }

__device__ __forceinline__ void mma_16816(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();   // no m16n8k16 before sm_80; cuda_ext.lerf_relevancy never launches it there
#endif
}

// KSteps: 16-wide slices of the code (ceil(d / 16), rounded up to 1, 2 or 4); NTiles: 8-text slices.
template <int KSteps, int NTiles>
__global__ void __launch_bounds__(kWarps * 32) lerf_relevancy_kernel(const LerfRelevancyArgs args) {
  const int lane = threadIdx.x & 31;
  const int group = lane >> 2;        // MMA row (and row + 8) of this lane; B column
  const int quad = lane & 3;          // which pair of k (and of output columns) this lane holds
  const int d = args.d;
  const int words_per_row = d >> 1;   // two float16 per 32-bit word
  const uint32_t* codes = reinterpret_cast<const uint32_t*>(args.codes);
  const uint32_t* proj = reinterpret_cast<const uint32_t*>(args.proj);

  // B fragments (the texts), the same for every tile: b0 holds k = 2 quad, 2 quad + 1 of text (column) `group`,
  // b1 the same 8 further on. Past the code's width or the texts: zero.
  uint32_t b[KSteps][NTiles][2];
#pragma unroll
  for (int ks = 0; ks < KSteps; ++ks) {
#pragma unroll
    for (int nt = 0; nt < NTiles; ++nt) {
      const int text = nt * 8 + group;
      const int k0 = ks * 16 + 2 * quad;
      const bool text_ok = text < args.texts;
      b[ks][nt][0] = (text_ok && k0 < d) ? proj[text * words_per_row + (k0 >> 1)] : 0u;
      b[ks][nt][1] = (text_ok && k0 + 8 < d) ? proj[text * words_per_row + ((k0 + 8) >> 1)] : 0u;
    }
  }
  // This lane's output columns (texts) 8 nt + 2 quad + e: their offsets and whether they exist.
  float offs[NTiles][2];
#pragma unroll
  for (int nt = 0; nt < NTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int text = nt * 8 + 2 * quad + e;
      offs[nt][e] = text < args.texts ? args.offs[text] : 0.0f;
    }
  }

  const int64_t tiles = (args.rows + 15) / 16;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps * kTilesPerIter;
  // The row this lane finishes (sigmoid, store): quad q takes tile q / 2, row group + 8 (q % 2), so the
  // 32 lanes finish the 32 rows of the step's two tiles.
  const int own_tile = quad >> 1, own_half = quad & 1;
  for (int64_t first = warp * kTilesPerIter; first < tiles; first += stride) {
    // A fragments: a0 = row `group`, k 2 quad..+1; a1 = row group + 8, same k; a2, a3 = the same rows, k + 8.
    // Every load of the step is issued before the first MMA.
    uint32_t a[kTilesPerIter][KSteps][4];
    float inverse[kTilesPerIter][2];
#pragma unroll
    for (int u = 0; u < kTilesPerIter; ++u) {
      const int64_t row0 = (first + u) * 16 + group;
      const int64_t row1 = row0 + 8;
      const bool in0 = row0 < args.rows, in1 = row1 < args.rows;
#pragma unroll
      for (int ks = 0; ks < KSteps; ++ks) {
        const int k0 = ks * 16 + 2 * quad;
        const bool lo = k0 < d, hi = k0 + 8 < d;
        const int w = k0 >> 1;
        a[u][ks][0] = (in0 && lo) ? __ldg(codes + row0 * words_per_row + w) : 0u;
        a[u][ks][1] = (in1 && lo) ? __ldg(codes + row1 * words_per_row + w) : 0u;
        a[u][ks][2] = (in0 && hi) ? __ldg(codes + row0 * words_per_row + w + 4) : 0u;
        a[u][ks][3] = (in1 && hi) ? __ldg(codes + row1 * words_per_row + w + 4) : 0u;
      }
      inverse[u][0] = in0 ? __ldg(args.inverse + row0) : 0.0f;
      inverse[u][1] = in1 ? __ldg(args.inverse + row1) : 0.0f;
    }
    const int64_t own_row = (first + own_tile) * 16 + group + 8 * own_half;
    const bool own_in = own_row < args.rows;
    const bool own_unseen = own_in ? __ldg(args.unseen + own_row) != 0 : true;

    // acc[nt][2 h + e]: row group + 8 h, column (text) 8 nt + 2 quad + e. Cosines, then per row the positive
    // (text 0, held by quad 0) and the largest negative over the row's four lanes.
    float positive[kTilesPerIter][2], negative[kTilesPerIter][2];
#pragma unroll
    for (int u = 0; u < kTilesPerIter; ++u) {
      positive[u][0] = positive[u][1] = 0.0f;
      negative[u][0] = negative[u][1] = -CUDART_INF_F;
      if (first + u >= tiles) continue;   // warp-uniform: every lane reaches each MMA and shuffle or none does
      float acc[NTiles][4];
#pragma unroll
      for (int nt = 0; nt < NTiles; ++nt) {
        acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < KSteps; ++ks) mma_16816(acc[nt], a[u][ks], b[ks][nt][0], b[ks][nt][1]);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int nt = 0; nt < NTiles; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int text = nt * 8 + 2 * quad + e;
            if (text < args.texts) {
              const float product = __half2float(__float2half_rn(acc[nt][2 * h + e]));
              const float cosine = __fmul_rn(__fadd_rn(product, offs[nt][e]), inverse[u][h]);
              if (text == 0) {
                positive[u][h] = cosine;
              } else {
                negative[u][h] = max_keeping_nan(negative[u][h], cosine);
              }
            }
          }
        }
        negative[u][h] = max_keeping_nan(negative[u][h], __shfl_xor_sync(kFullMask, negative[u][h], 1));
        negative[u][h] = max_keeping_nan(negative[u][h], __shfl_xor_sync(kFullMask, negative[u][h], 2));
        positive[u][h] = __shfl_sync(kFullMask, positive[u][h], lane & ~3);
      }
    }
    if (own_in) {
      float relevancy = 0.5f;
      if (!own_unseen) {
        // Selects, not an index by quad: a run-time index would put the arrays in local memory.
        const float c0 = own_tile == 0 ? (own_half == 0 ? positive[0][0] : positive[0][1])
                                       : (own_half == 0 ? positive[1][0] : positive[1][1]);
        const float ck = own_tile == 0 ? (own_half == 0 ? negative[0][0] : negative[0][1])
                                       : (own_half == 0 ? negative[1][0] : negative[1][1]);
        const float x = __fmul_rn(__fsub_rn(c0, ck), 10.0f);
        // torch.sigmoid's float formula 1 / (1 + expf(-x)); the correctly rounded reciprocal is that division.
        relevancy = __frcp_rn(__fadd_rn(1.0f, expf(-x)));
      }
      args.out[own_row] = __half_as_ushort(__float2half_rn(relevancy));
    }
  }
}

template <int KSteps, int NTiles>
cudaError_t launch(const LerfRelevancyArgs& args, int blocks, cudaStream_t stream) {
  lerf_relevancy_kernel<KSteps, NTiles><<<blocks, kWarps * 32, 0, stream>>>(args);
  return cudaGetLastError();
}

template <int KSteps>
cudaError_t launch_for_texts(const LerfRelevancyArgs& args, int blocks, cudaStream_t stream) {
  const int ntiles = (args.texts + 7) / 8;
  if (ntiles == 1) return launch<KSteps, 1>(args, blocks, stream);
  if (ntiles == 2) return launch<KSteps, 2>(args, blocks, stream);
  return launch<KSteps, 4>(args, blocks, stream);
}

}  // namespace

cudaError_t launch_lerf_relevancy(const LerfRelevancyArgs& args, cudaStream_t stream) {
  if (args.d <= 0 || args.d % 2 != 0 || args.d > kMaxCodeWidth || args.texts < 2 || args.texts > kMaxTexts) {
    return cudaErrorInvalidValue;
  }
  if (args.rows == 0) return cudaSuccess;
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  // Enough blocks to fill every SM (8 blocks of 256 threads each), each warp then striding over the tiles.
  const int64_t tiles = (args.rows + 15) / 16;
  const int64_t wanted = (tiles + kWarps * kTilesPerIter - 1) / (kWarps * kTilesPerIter);
  const int blocks = static_cast<int>(wanted < static_cast<int64_t>(sms) * 8 ? wanted : static_cast<int64_t>(sms) * 8);
  const int ksteps = (args.d + 15) / 16;
  if (ksteps == 1) return launch_for_texts<1>(args, blocks, stream);
  if (ksteps == 2) return launch_for_texts<2>(args, blocks, stream);
  return launch_for_texts<4>(args, blocks, stream);
}
