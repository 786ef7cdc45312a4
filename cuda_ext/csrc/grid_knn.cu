// k nearest neighbours among the points of the 27 grid cells around each query (engine.neighbours.grid_knn's
// search step; cuda_ext.reference.grid_knn_reference is the same in torch). One thread per query keeps its k
// best in a sorted list (insertion, ties in scan order); the points are sorted by cell so a cell's points are
// read contiguously, and queries come sorted by cell so a warp's threads read the same cells.
#include <cuda_runtime.h>
#include <cstdint>

#include "grid_knn.h"

namespace {

__device__ int64_t find_cell(const int64_t* cells, int64_t num_cells, int64_t key) {
  int64_t lo = 0, hi = num_cells;   // first cell >= key
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (cells[mid] < key) lo = mid + 1; else hi = mid;
  }
  return (lo < num_cells && cells[lo] == key) ? lo : -1;
}

__global__ void __launch_bounds__(128) grid_knn_kernel(const GridKnnArgs args) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= args.q) return;
  double best_d[kMaxGridK];
  int64_t best_i[kMaxGridK];
  const int k = args.k;
  for (int j = 0; j < k; ++j) {
    best_d[j] = __longlong_as_double(0x7ff0000000000000LL);   // +inf
    best_i[j] = -1;
  }
  const double qx = args.query_points[3 * q], qy = args.query_points[3 * q + 1], qz = args.query_points[3 * q + 2];
  const int64_t self = args.query_ids[q];
  const int64_t key = args.query_keys[q];
  for (int o = 0; o < 27; ++o) {
    const int64_t cell = find_cell(args.cells, args.num_cells, key + args.offsets[o]);
    if (cell < 0) continue;
    const int64_t begin = args.starts[cell], end = begin + args.counts[cell];
    for (int64_t s = begin; s < end; ++s) {
      const int64_t id = args.order[s];
      if (id == self) continue;
      const double dx = args.points[3 * s] - qx, dy = args.points[3 * s + 1] - qy, dz = args.points[3 * s + 2] - qz;
      // Rounded step by step (no fused multiply-add), as the torch reference sums the same squares.
      const double d2 = __dadd_rn(__dadd_rn(__dmul_rn(dx, dx), __dmul_rn(dy, dy)), __dmul_rn(dz, dz));
      if (!(d2 < best_d[k - 1])) continue;
      int j = k - 1;
      while (j > 0 && best_d[j - 1] > d2) {
        best_d[j] = best_d[j - 1];
        best_i[j] = best_i[j - 1];
        --j;
      }
      best_d[j] = d2;
      best_i[j] = id;
    }
  }
  for (int j = 0; j < k; ++j) {
    args.out_idx[q * k + j] = best_i[j];
    args.out_d2[q * k + j] = best_d[j];
  }
}

}  // namespace

cudaError_t launch_grid_knn(const GridKnnArgs& args, cudaStream_t stream) {
  if (args.q == 0) return cudaSuccess;
  if (args.k < 1 || args.k > kMaxGridK) return cudaErrorInvalidValue;
  const int threads = 128;
  const int64_t blocks = (args.q + threads - 1) / threads;
  grid_knn_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(args);
  return cudaGetLastError();
}
