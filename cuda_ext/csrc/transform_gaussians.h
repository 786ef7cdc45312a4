// Launcher of the batched Gaussian transform kernel; kept free of torch headers so nvcc compiles it alone.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

constexpr int kParamsPerObject = 100;

struct TransformGaussiansArgs {
  const float* means;          // (n, 3)
  const float* quats;          // (n, 4) wxyz, 16-byte aligned
  const float* log_scales;     // (n, 3)
  const float* sh;             // (n, k, 3)
  const int32_t* object_index; // (n,)
  const float* params;         // (num_objects, kParamsPerObject)
  int num_objects;
  int64_t n;
  int k;                       // SH coefficients per channel: 0, 3, 8 or 15
  bool sh_aligned16;
  bool out_sh_aligned16;
  float* out_means;
  float* out_quats;
  float* out_log_scales;
  float* out_sh;
};

cudaError_t launch_transform_gaussians(const TransformGaussiansArgs& args, cudaStream_t stream);
