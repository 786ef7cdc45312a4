// One pixel composited from its tile's depth-sorted Gaussians, with gsplat's rasterize_to_pixels arithmetic
// (the same alpha, the same transmittance product, the same per-channel sums in the same order), so the
// value is the whole render's at that pixel. gsplat gives a 16 x 16 tile one block that runs until all of its
// 256 pixels are saturated; a click needs one pixel, and a tile over fine Gaussians (a SAGA benchmark's
// sphere: 30,000 in the tile, 6,000 before the worst pixel saturates) kept that block busy for 0.8 ms.
// Here a block takes the tile's Gaussians 256 at a time: every thread one Gaussian's alpha (independent),
// then one thread the transmittance recurrence over the batch (a multiply per Gaussian, in order, as gsplat
// does it), then one thread per channel its sum over the batch's contributing Gaussians, in order.
#include <cuda_runtime.h>
#include <cstdint>

#include "composite_pixel.h"

namespace {

constexpr int kBatch = 256;
constexpr float kAlphaThreshold = 1.0f / 255.0f;
constexpr float kMaxAlpha = 0.999f;
constexpr float kMinTransmittance = 1e-4f;

__global__ void __launch_bounds__(kBatch) composite_pixel_kernel(const CompositePixelArgs args) {
  __shared__ float s_alpha[kBatch];     // < 0: not composited (gsplat's `continue`)
  __shared__ float s_vis[kBatch];
  __shared__ int64_t s_row[kBatch];
  __shared__ int s_list[kBatch];
  __shared__ int s_count;
  __shared__ int s_done;
  __shared__ float s_T;

  const int t = threadIdx.x;
  const int32_t range_start = args.tile_offsets[args.tile];
  const int32_t range_end = args.tile + 1 < args.tiles ? args.tile_offsets[args.tile + 1]
                                                        : static_cast<int32_t>(args.n_isects);
  if (t == 0) {
    s_done = 0;
    s_T = 1.0f;
  }
  float sum = 0.0f;   // thread t < C: channel t
  for (int32_t batch = range_start; batch < range_end; batch += kBatch) {
    __syncthreads();
    if (s_done) break;
    const int32_t idx = batch + t;
    if (idx < range_end) {
      const int32_t flat = args.flatten_ids[idx];
      const int64_t g = args.gaussian_ids[flat];
      const float2 xy = reinterpret_cast<const float2*>(args.means2d)[flat];
      const float* co = args.conics + 3 * static_cast<int64_t>(flat);
      const float cx = co[0], cy = co[1], cz = co[2];
      const float opac = args.opacities[g];
      const float dx = xy.x - args.px, dy = xy.y - args.py;
      const float sigma = 0.5f * (cx * dx * dx + cz * dy * dy) + cy * dx * dy;
      const float alpha = fminf(kMaxAlpha, opac * __expf(-sigma));
      s_alpha[t] = (sigma < 0.0f || alpha < kAlphaThreshold) ? -1.0f : alpha;
      s_row[t] = g;
    }
    __syncthreads();
    if (t == 0) {
      const int count = min(kBatch, range_end - batch);
      float T = s_T;
      int n = 0;
      for (int j = 0; j < count; ++j) {
        const float alpha = s_alpha[j];
        if (alpha < 0.0f) continue;
        const float next_T = T * (1.0f - alpha);
        if (next_T <= kMinTransmittance) {   // this pixel is done: exclusive, as gsplat
          s_done = 1;
          break;
        }
        s_vis[n] = alpha * T;
        s_list[n++] = j;
        T = next_T;
      }
      s_T = T;
      s_count = n;
    }
    __syncthreads();
    if (t < args.c) {
      const int n = s_count;
      for (int j = 0; j < n; ++j) {
        sum += args.channels[s_row[s_list[j]] * args.c + t] * s_vis[j];
      }
    }
  }
  __syncthreads();
  if (t < args.c) args.out[t] = sum;
  if (t == 0) args.out[args.c] = 1.0f - s_T;
}

}  // namespace

cudaError_t launch_composite_pixel(const CompositePixelArgs& args, cudaStream_t stream) {
  if (args.c < 1 || args.c > kMaxPixelChannels || args.c > kBatch) return cudaErrorInvalidValue;
  composite_pixel_kernel<<<1, kBatch, 0, stream>>>(args);
  return cudaGetLastError();
}
