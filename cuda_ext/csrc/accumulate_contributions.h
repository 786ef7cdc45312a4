// Launcher of the per-Gaussian contribution accumulation (mask lifting); free of torch headers.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

struct AccumulateContributionsArgs {
  const float* means2d;         // (I, N, 2) pixels, gsplat's unpacked projection
  const float* conics;          // (I, N, 3) inverse 2D covariance (a, b, c)
  const float* opacities;       // (N,)
  const int32_t* labels;        // (I, H, W): label of each pixel; outside [0, num_labels) = not counted
  const int32_t* tile_offsets;  // (I, tiles_y, tiles_x) first intersection of each tile (isect_offset_encode)
  const int32_t* flatten_ids;   // (n_isects,) index into I * N, sorted by image, tile, depth
  int64_t n;                    // Gaussians
  int images;
  int width;
  int height;
  int tile_size;                // 16: one thread per pixel of a tile
  int tiles_x;
  int tiles_y;
  int64_t n_isects;
  int num_labels;
  float* votes;                 // (N, num_labels), accumulated into (zero it first)
};

cudaError_t launch_accumulate_contributions(const AccumulateContributionsArgs& args, cudaStream_t stream);
