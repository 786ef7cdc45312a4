// Batched rigid (uniform-scale) transform of 3D Gaussians, SH degrees 0..3 rotated with them.
// One thread per Gaussian; the SH block, the bulk of the bytes, is staged through shared memory so that
// global loads and stores are coalesced 16-byte accesses. Per-object parameters (PARAMS_PER_OBJECT floats,
// layout in cuda_ext/reference.py) sit in shared memory when few objects, else are read through the cache.
#include <cuda_runtime.h>
#include <cstdint>

#include "transform_gaussians.h"

namespace {

constexpr int kThreads = 128;
constexpr int kMaxSharedObjects = 32;

// Offsets inside one object's parameter row (must match cuda_ext/reference.py).
constexpr int kLinear = 0;       // 3x3 linear part for positions, row-major
constexpr int kTranslation = 9;  // 3
constexpr int kQuat = 12;        // rotation as wxyz quaternion
constexpr int kLogScale = 16;    // log of the uniform scale
constexpr int kD1 = 17;          // 3x3 SH rotation of band 1, row-major
constexpr int kD2 = 26;          // 5x5
constexpr int kD3 = 51;          // 7x7
static_assert(kD3 + 49 == kParamsPerObject, "parameter layout");

template <int N>
__device__ __forceinline__ void rotate_band(const float* __restrict__ d, const float (&in)[15][3], float (&out)[15][3],
                                            int offset) {
#pragma unroll
  for (int r = 0; r < N; ++r) {
    float acc0 = 0.f, acc1 = 0.f, acc2 = 0.f;
#pragma unroll
    for (int c = 0; c < N; ++c) {
      const float w = d[r * N + c];
      acc0 = fmaf(w, in[offset + c][0], acc0);
      acc1 = fmaf(w, in[offset + c][1], acc1);
      acc2 = fmaf(w, in[offset + c][2], acc2);
    }
    out[offset + r][0] = acc0;
    out[offset + r][1] = acc1;
    out[offset + r][2] = acc2;
  }
}

// Padding the per-Gaussian stride to an odd number of words keeps the compute phase free of bank conflicts.
template <int K>
struct ShLayout {
  static constexpr int kFloats = 3 * K;
  static constexpr int kStride = (kFloats % 2 == 1 || kFloats == 0) ? kFloats : kFloats + 1;
};

template <int K>
__device__ __forceinline__ void copy_sh_tile(const float* __restrict__ src, float* __restrict__ dst, int count,
                                             bool vectorised, bool to_shared) {
  using L = ShLayout<K>;
  constexpr bool kPacked = L::kStride == L::kFloats;
  const int total = count * L::kFloats;
  // to_shared: global (packed) -> tile (strided); else tile -> global.
  int start = 0;
  if (vectorised && kPacked) {
    const int nvec = total / 4;
    for (int v = threadIdx.x; v < nvec; v += kThreads) {
      reinterpret_cast<float4*>(dst)[v] = reinterpret_cast<const float4*>(src)[v];
    }
    start = nvec * 4;
  } else if (vectorised) {
    const int nvec = total / 4;
    for (int v = threadIdx.x; v < nvec; v += kThreads) {
      const int f = v * 4;
      if (to_shared) {
        const float4 x = reinterpret_cast<const float4*>(src)[v];
        const float e[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int g = (f + i) / L::kFloats;
          dst[g * L::kStride + (f + i) - g * L::kFloats] = e[i];
        }
      } else {
        float e[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int g = (f + i) / L::kFloats;
          e[i] = src[g * L::kStride + (f + i) - g * L::kFloats];
        }
        reinterpret_cast<float4*>(dst)[v] = make_float4(e[0], e[1], e[2], e[3]);
      }
    }
    start = nvec * 4;
  }
  for (int f = start + threadIdx.x; f < total; f += kThreads) {
    const int g = f / L::kFloats;
    const int j = f - g * L::kFloats;
    if (to_shared) {
      dst[g * L::kStride + j] = src[f];
    } else {
      dst[f] = src[g * L::kStride + j];
    }
  }
}

template <int K>
__global__ void __launch_bounds__(kThreads) transform_gaussians_kernel(
    const float* __restrict__ means, const float* __restrict__ quats, const float* __restrict__ log_scales,
    const float* __restrict__ sh, const int32_t* __restrict__ object_index, const float* __restrict__ params,
    int num_objects, int64_t n, bool vectorised, float* __restrict__ out_means, float* __restrict__ out_quats,
    float* __restrict__ out_log_scales, float* __restrict__ out_sh) {
  using L = ShLayout<K>;
  extern __shared__ __align__(16) float smem[];
  const bool params_shared = num_objects <= kMaxSharedObjects;
  float* tile = smem + (params_shared ? num_objects * kParamsPerObject : 0);

  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads;
  const int count = static_cast<int>(n - first < kThreads ? n - first : kThreads);
  if (params_shared) {
    for (int i = threadIdx.x; i < num_objects * kParamsPerObject; i += kThreads) smem[i] = __ldg(params + i);
  }
  if constexpr (K > 0) copy_sh_tile<K>(sh + first * L::kFloats, tile, count, vectorised, true);
  __syncthreads();

  const int t = threadIdx.x;
  if (t < count) {
    const int64_t i = first + t;
    const int obj = __ldg(object_index + i);
    const bool valid = obj >= 0 && obj < num_objects;  // an invalid index leaves the Gaussian as it was
    const float* p = (params_shared ? smem : params) + (valid ? obj : 0) * kParamsPerObject;

    const float4 q = reinterpret_cast<const float4*>(quats)[i];
    const float x = means[3 * i], y = means[3 * i + 1], z = means[3 * i + 2];
    const float s0 = log_scales[3 * i], s1 = log_scales[3 * i + 1], s2 = log_scales[3 * i + 2];
    if (valid) {
      const float* a = p + kLinear;
      out_means[3 * i] = fmaf(a[0], x, fmaf(a[1], y, fmaf(a[2], z, p[kTranslation])));
      out_means[3 * i + 1] = fmaf(a[3], x, fmaf(a[4], y, fmaf(a[5], z, p[kTranslation + 1])));
      out_means[3 * i + 2] = fmaf(a[6], x, fmaf(a[7], y, fmaf(a[8], z, p[kTranslation + 2])));
      // q' = q_R ⊗ q (Hamilton, wxyz): q_R is unit, so the stored quaternion keeps its norm.
      const float rw = p[kQuat], rx = p[kQuat + 1], ry = p[kQuat + 2], rz = p[kQuat + 3];
      float4 o;
      o.x = rw * q.x - rx * q.y - ry * q.z - rz * q.w;
      o.y = rw * q.y + rx * q.x + ry * q.w - rz * q.z;
      o.z = rw * q.z - rx * q.w + ry * q.x + rz * q.y;
      o.w = rw * q.w + rx * q.z - ry * q.y + rz * q.x;
      reinterpret_cast<float4*>(out_quats)[i] = o;
      const float ls = p[kLogScale];
      out_log_scales[3 * i] = s0 + ls;
      out_log_scales[3 * i + 1] = s1 + ls;
      out_log_scales[3 * i + 2] = s2 + ls;
    } else {
      out_means[3 * i] = x;
      out_means[3 * i + 1] = y;
      out_means[3 * i + 2] = z;
      reinterpret_cast<float4*>(out_quats)[i] = q;
      out_log_scales[3 * i] = s0;
      out_log_scales[3 * i + 1] = s1;
      out_log_scales[3 * i + 2] = s2;
    }
    // An invalid Gaussian's tile slot still holds its input, which is stored back unchanged.
    if (K > 0 && valid) {
      float in[15][3];
      float out[15][3];
      float* mine = tile + t * L::kStride;
#pragma unroll
      for (int j = 0; j < K; ++j) {
#pragma unroll
        for (int c = 0; c < 3; ++c) in[j][c] = mine[3 * j + c];
      }
      if (K >= 3) rotate_band<3>(p + kD1, in, out, 0);
      if (K >= 8) rotate_band<5>(p + kD2, in, out, 3);
      if (K >= 15) rotate_band<7>(p + kD3, in, out, 8);
#pragma unroll
      for (int j = 0; j < K; ++j) {
#pragma unroll
        for (int c = 0; c < 3; ++c) mine[3 * j + c] = out[j][c];
      }
    }
  }
  if constexpr (K > 0) {
    __syncthreads();
    copy_sh_tile<K>(tile, out_sh + first * L::kFloats, count, vectorised, false);
  }
}

template <int K>
cudaError_t launch(const TransformGaussiansArgs& args, cudaStream_t stream) {
  using L = ShLayout<K>;
  const bool params_shared = args.num_objects <= kMaxSharedObjects;
  const size_t shared_bytes =
      sizeof(float) * ((params_shared ? args.num_objects * kParamsPerObject : 0) + kThreads * L::kStride);
  const int64_t blocks = (args.n + kThreads - 1) / kThreads;
  const bool vectorised = args.sh_aligned16 && args.out_sh_aligned16;
  transform_gaussians_kernel<K><<<static_cast<unsigned>(blocks), kThreads, shared_bytes, stream>>>(
      args.means, args.quats, args.log_scales, args.sh, args.object_index, args.params, args.num_objects, args.n,
      vectorised, args.out_means, args.out_quats, args.out_log_scales, args.out_sh);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_transform_gaussians(const TransformGaussiansArgs& args, cudaStream_t stream) {
  if (args.n == 0) return cudaSuccess;
  switch (args.k) {
    case 0: return launch<0>(args, stream);
    case 3: return launch<3>(args, stream);
    case 8: return launch<8>(args, stream);
    case 15: return launch<15>(args, stream);
    default: return cudaErrorInvalidValue;
  }
}
