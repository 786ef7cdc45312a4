// Per-Gaussian contribution accumulation for lifting 2D masks onto Gaussians: for every pixel, every
// Gaussian composited into it adds its weight w = alpha x transmittance (exactly as gsplat's forward pass
// composites it) into votes[gaussian, label of the pixel].
// One block per 16x16 tile, one thread per pixel; the tile's depth-sorted Gaussians are staged through
// shared memory a block-width batch at a time (as gsplat's rasterize_to_pixels), and the block stops once
// every pixel is saturated. Adds are aggregated per warp: where all lanes hit by a Gaussian share a label
// (the common case inside a mask) one lane adds the warp's sum, so atomics scale with warps, not pixels.
#include <cuda_runtime.h>
#include <cstdint>

#include "accumulate_contributions.h"

namespace {

constexpr float kAlphaThreshold = 1.0f / 255.0f;
constexpr float kMaxAlpha = 0.999f;
constexpr float kMinTransmittance = 1e-4f;
constexpr unsigned kFullMask = 0xffffffffu;

template <int kTile>
__global__ void __launch_bounds__(kTile * kTile)
accumulate_contributions_kernel(const AccumulateContributionsArgs args) {
  constexpr int kBlock = kTile * kTile;
  __shared__ int32_t s_id[kBlock];
  __shared__ float2 s_xy[kBlock];
  __shared__ float4 s_conic_opacity[kBlock];

  const int image = blockIdx.z;
  const int tile_id = blockIdx.y * args.tiles_x + blockIdx.x;
  const int thread = threadIdx.y * kTile + threadIdx.x;
  const int px = blockIdx.x * kTile + threadIdx.x;
  const int py = blockIdx.y * kTile + threadIdx.y;
  const bool inside = px < args.width && py < args.height;
  const int64_t pix = (static_cast<int64_t>(image) * args.height + py) * args.width + px;
  const int label = inside ? args.labels[pix] : -1;
  const float fx = px + 0.5f, fy = py + 0.5f;
  // A pixel whose label is not counted adds nothing: it only takes part in the shared loads.
  bool done = !(label >= 0 && label < args.num_labels);
  float T = 1.0f;

  const int64_t tile_index = static_cast<int64_t>(image) * args.tiles_y * args.tiles_x + tile_id;
  const int64_t n_tiles = static_cast<int64_t>(args.images) * args.tiles_y * args.tiles_x;
  const int32_t range_start = args.tile_offsets[tile_index];
  const int32_t range_end = tile_index + 1 < n_tiles ? args.tile_offsets[tile_index + 1]
                                                      : static_cast<int32_t>(args.n_isects);
  const int lane = thread & 31;

  for (int32_t batch = range_start; batch < range_end; batch += kBlock) {
    // Stop when every pixel of the tile is saturated (or not counted).
    if (__syncthreads_count(done) == kBlock) break;
    const int32_t idx = batch + thread;
    if (idx < range_end) {
      const int32_t flat = args.flatten_ids[idx];
      const int32_t g = static_cast<int32_t>(flat % args.n);
      s_id[thread] = g;
      s_xy[thread] = reinterpret_cast<const float2*>(args.means2d)[flat];
      const float* c = args.conics + 3 * static_cast<int64_t>(flat);
      s_conic_opacity[thread] = make_float4(c[0], c[1], c[2], args.opacities[g]);
    }
    __syncthreads();
    const int count = min(kBlock, range_end - batch);
    for (int j = 0; j < count; ++j) {
      float w = 0.0f;
      if (!done) {
        const float4 co = s_conic_opacity[j];
        const float2 xy = s_xy[j];
        const float dx = xy.x - fx, dy = xy.y - fy;
        const float sigma = 0.5f * (co.x * dx * dx + co.z * dy * dy) + co.y * dx * dy;
        const float alpha = fminf(kMaxAlpha, co.w * __expf(-sigma));
        if (sigma >= 0.0f && alpha >= kAlphaThreshold) {
          const float next_T = T * (1.0f - alpha);
          if (next_T <= kMinTransmittance) {
            done = true;                      // gsplat stops before this Gaussian
          } else {
            w = alpha * T;
            T = next_T;
          }
        }
      }
      // Warp-uniform from here: every lane of the warp reaches the shuffles.
      const unsigned hit = __ballot_sync(kFullMask, w > 0.0f);
      if (hit == 0u) continue;
      const int leader = __ffs(hit) - 1;
      const int lead_label = __shfl_sync(kFullMask, label, leader);
      float* row = args.votes + static_cast<int64_t>(s_id[j]) * args.num_labels;
      if (__all_sync(kFullMask, w == 0.0f || label == lead_label)) {
        float sum = w;
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(kFullMask, sum, offset);
        if (lane == leader) atomicAdd(row + lead_label, sum);
      } else if (w > 0.0f) {
        atomicAdd(row + label, w);
      }
    }
  }
}

}  // namespace

cudaError_t launch_accumulate_contributions(const AccumulateContributionsArgs& args, cudaStream_t stream) {
  if (args.n == 0 || args.images == 0 || args.n_isects == 0) return cudaSuccess;
  if (args.tile_size != 16) return cudaErrorInvalidValue;
  const dim3 grid(args.tiles_x, args.tiles_y, args.images);
  const dim3 block(16, 16, 1);
  accumulate_contributions_kernel<16><<<grid, block, 0, stream>>>(args);
  return cudaGetLastError();
}
