// Launcher of one pixel's compositing (a SAGA click); free of torch headers.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

constexpr int kMaxPixelChannels = 256;

struct CompositePixelArgs {
  const float* means2d;          // (M, 2) pixels, gsplat's packed projection
  const float* conics;           // (M, 3)
  const float* opacities;        // (N,)
  const float* channels;         // (N, C)
  const int64_t* gaussian_ids;   // (M,) each projected Gaussian's row in opacities and channels
  const int32_t* tile_offsets;   // (tiles,) first intersection of each tile (isect_offset_encode, one image)
  const int32_t* flatten_ids;    // (n_isects,) into the M projected Gaussians, by tile then depth
  int64_t n_isects;
  int tiles;
  int tile;                      // the pixel's tile
  float px, py;                  // the pixel's centre
  int c;
  float* out;                    // (C + 1,): the channels composited, then alpha
};

cudaError_t launch_composite_pixel(const CompositePixelArgs& args, cudaStream_t stream);
