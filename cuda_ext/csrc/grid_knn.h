// Launcher of the grid k-nearest-neighbour search (engine.neighbours.grid_knn); free of torch headers.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

constexpr int kMaxGridK = 64;   // neighbours per query the kernel keeps (local arrays of this size)

struct GridKnnArgs {
  const double* points;        // (N, 3) the points sorted by cell key
  const int64_t* order;        // (N,) each sorted point's index in the caller's numbering
  const int64_t* cells;        // (C,) the occupied cells' keys, increasing
  const int64_t* starts;       // (C,) each cell's first sorted point
  const int64_t* counts;       // (C,) each cell's point count
  const int64_t* offsets;      // (27,) key offsets of a cell's 3 x 3 x 3 block
  const double* query_points;  // (Q, 3)
  const int64_t* query_keys;   // (Q,) each query's cell key
  const int64_t* query_ids;    // (Q,) the query's own index (skipped among its candidates)
  int64_t num_cells;
  int64_t q;
  int k;
  int64_t* out_idx;            // (Q, k) nearest first; -1 where fewer than k candidates
  double* out_d2;              // (Q, k) squared distances; inf where fewer than k candidates
};

cudaError_t launch_grid_knn(const GridKnnArgs& args, cudaStream_t stream);
