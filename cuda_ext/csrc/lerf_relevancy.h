// Launcher of the fused LERF relevancy of a 4D query; kept free of torch headers so nvcc compiles it alone.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

// The kernel's limits: codes up to kMaxCodeWidth wide, up to kMaxTexts texts (the positive and its negatives).
constexpr int kMaxCodeWidth = 64;
constexpr int kMaxTexts = 32;

struct LerfRelevancyArgs {
  const uint16_t* codes;    // (rows, d) float16 bits, row-major, 4-byte aligned; rows = timesteps x Gaussians
  const uint16_t* proj;     // (texts, d) float16 bits, 4-byte aligned: text j's direction in code space as row j
  const float* offs;        // (texts,) each text's product with the decoder bias
  const float* inverse;     // (rows,) 1 / |decoded feature| of each code
  const uint8_t* unseen;    // (rows,) bool: never seen at that timestep (relevancy 0.5)
  int64_t rows;
  int d;                    // code width: even, at most kMaxCodeWidth
  int texts;                // 1 + number of negatives: 2 .. kMaxTexts
  uint16_t* out;            // (rows,) float16 bits
};

cudaError_t launch_lerf_relevancy(const LerfRelevancyArgs& args, cudaStream_t stream);
