// Torch bindings of our CUDA kernels: argument checks, output allocation, launch on the current stream.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "accumulate_contributions.h"
#include "composite_pixel.h"
#include "grid_knn.h"
#include "lerf_relevancy.h"
#include "transform_gaussians.h"

namespace {

void check_float_cuda(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == torch::kFloat32, name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

std::vector<torch::Tensor> transform_gaussians(const torch::Tensor& means, const torch::Tensor& quats,
                                               const torch::Tensor& log_scales, const torch::Tensor& sh_rest,
                                               const torch::Tensor& object_index, const torch::Tensor& params) {
  check_float_cuda(means, "means");
  check_float_cuda(quats, "quats");
  check_float_cuda(log_scales, "log_scales");
  check_float_cuda(sh_rest, "sh_rest");
  check_float_cuda(params, "params");
  TORCH_CHECK(object_index.is_cuda() && object_index.scalar_type() == torch::kInt32 && object_index.is_contiguous(),
              "object_index must be a contiguous int32 CUDA tensor");
  const int64_t n = means.size(0);
  TORCH_CHECK(means.dim() == 2 && means.size(1) == 3, "means must be (N, 3)");
  TORCH_CHECK(quats.dim() == 2 && quats.size(0) == n && quats.size(1) == 4, "quats must be (N, 4)");
  TORCH_CHECK(log_scales.dim() == 2 && log_scales.size(0) == n && log_scales.size(1) == 3,
              "log_scales must be (N, 3)");
  TORCH_CHECK(sh_rest.dim() == 3 && sh_rest.size(0) == n && sh_rest.size(2) == 3, "sh_rest must be (N, K, 3)");
  const int64_t k = sh_rest.size(1);
  TORCH_CHECK(k == 0 || k == 3 || k == 8 || k == 15, "sh_rest must have K in {0, 3, 8, 15}, got ", k);
  TORCH_CHECK(object_index.dim() == 1 && object_index.size(0) == n, "object_index must be (N,)");
  TORCH_CHECK(params.dim() == 2 && params.size(1) == kParamsPerObject, "params must be (O, ", kParamsPerObject, ")");
  TORCH_CHECK(aligned16(quats.data_ptr()), "quats must be 16-byte aligned");
  for (const auto* t : {&quats, &log_scales, &sh_rest, &object_index, &params}) {
    TORCH_CHECK(t->device() == means.device(), "all tensors must be on the same device");
  }

  const c10::cuda::CUDAGuard guard(means.device());
  auto out_means = torch::empty_like(means);
  auto out_quats = torch::empty_like(quats);
  auto out_log_scales = torch::empty_like(log_scales);
  auto out_sh = torch::empty_like(sh_rest);
  TransformGaussiansArgs args{};
  args.means = means.data_ptr<float>();
  args.quats = quats.data_ptr<float>();
  args.log_scales = log_scales.data_ptr<float>();
  args.sh = sh_rest.data_ptr<float>();
  args.object_index = object_index.data_ptr<int32_t>();
  args.params = params.data_ptr<float>();
  args.num_objects = static_cast<int>(params.size(0));
  args.n = n;
  args.k = static_cast<int>(k);
  args.sh_aligned16 = aligned16(args.sh);
  args.out_sh_aligned16 = aligned16(out_sh.data_ptr());
  args.out_means = out_means.data_ptr<float>();
  args.out_quats = out_quats.data_ptr<float>();
  args.out_log_scales = out_log_scales.data_ptr<float>();
  args.out_sh = out_sh.data_ptr<float>();
  const cudaError_t err = launch_transform_gaussians(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "transform_gaussians kernel failed: ", cudaGetErrorString(err));
  return {out_means, out_quats, out_log_scales, out_sh};
}

torch::Tensor accumulate_contributions(const torch::Tensor& means2d, const torch::Tensor& conics,
                                       const torch::Tensor& opacities, const torch::Tensor& labels,
                                       const torch::Tensor& tile_offsets, const torch::Tensor& flatten_ids,
                                       int64_t num_labels, int64_t tile_size) {
  check_float_cuda(means2d, "means2d");
  check_float_cuda(conics, "conics");
  check_float_cuda(opacities, "opacities");
  for (const auto* t : {&labels, &tile_offsets, &flatten_ids}) {
    TORCH_CHECK(t->is_cuda() && t->scalar_type() == torch::kInt32 && t->is_contiguous(),
                "labels, tile_offsets and flatten_ids must be contiguous int32 CUDA tensors");
    TORCH_CHECK(t->device() == means2d.device(), "all tensors must be on the same device");
  }
  TORCH_CHECK(means2d.dim() == 3 && means2d.size(2) == 2, "means2d must be (I, N, 2)");
  const int64_t images = means2d.size(0), n = means2d.size(1);
  TORCH_CHECK(conics.dim() == 3 && conics.size(0) == images && conics.size(1) == n && conics.size(2) == 3,
              "conics must be (I, N, 3)");
  TORCH_CHECK(opacities.dim() == 1 && opacities.size(0) == n, "opacities must be (N,)");
  TORCH_CHECK(labels.dim() == 3 && labels.size(0) == images, "labels must be (I, H, W)");
  TORCH_CHECK(tile_offsets.dim() == 3 && tile_offsets.size(0) == images, "tile_offsets must be (I, th, tw)");
  TORCH_CHECK(tile_size == 16, "tile_size must be 16");
  TORCH_CHECK(num_labels > 0, "num_labels must be positive");
  const int64_t height = labels.size(1), width = labels.size(2);
  TORCH_CHECK(tile_offsets.size(1) == (height + tile_size - 1) / tile_size &&
              tile_offsets.size(2) == (width + tile_size - 1) / tile_size, "tile_offsets do not match the image size");
  TORCH_CHECK(images * n < (int64_t{1} << 31), "too many Gaussians x images for int32 flatten ids");
  TORCH_CHECK(reinterpret_cast<std::uintptr_t>(means2d.data_ptr()) % 8 == 0,
              "means2d must be 8-byte aligned (it is read as float2)");

  const c10::cuda::CUDAGuard guard(means2d.device());
  auto votes = torch::zeros({n, num_labels}, means2d.options());
  AccumulateContributionsArgs args{};
  args.means2d = means2d.data_ptr<float>();
  args.conics = conics.data_ptr<float>();
  args.opacities = opacities.data_ptr<float>();
  args.labels = labels.data_ptr<int32_t>();
  args.tile_offsets = tile_offsets.data_ptr<int32_t>();
  args.flatten_ids = flatten_ids.data_ptr<int32_t>();
  args.n = n;
  args.images = static_cast<int>(images);
  args.width = static_cast<int>(width);
  args.height = static_cast<int>(height);
  args.tile_size = static_cast<int>(tile_size);
  args.tiles_x = static_cast<int>(tile_offsets.size(2));
  args.tiles_y = static_cast<int>(tile_offsets.size(1));
  args.n_isects = flatten_ids.size(0);
  args.num_labels = static_cast<int>(num_labels);
  args.votes = votes.data_ptr<float>();
  const cudaError_t err = launch_accumulate_contributions(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "accumulate_contributions kernel failed: ", cudaGetErrorString(err));
  return votes;
}

torch::Tensor lerf_relevancy(const torch::Tensor& codes, const torch::Tensor& proj, const torch::Tensor& offs,
                             const torch::Tensor& inverse, const torch::Tensor& unseen) {
  TORCH_CHECK(codes.is_cuda() && codes.scalar_type() == torch::kFloat16 && codes.is_contiguous(),
              "codes must be a contiguous float16 CUDA tensor");
  TORCH_CHECK(proj.is_cuda() && proj.scalar_type() == torch::kFloat16 && proj.is_contiguous(),
              "proj must be a contiguous float16 CUDA tensor");
  check_float_cuda(offs, "offs");
  check_float_cuda(inverse, "inverse");
  TORCH_CHECK(unseen.is_cuda() && unseen.scalar_type() == torch::kBool && unseen.is_contiguous(),
              "unseen must be a contiguous bool CUDA tensor");
  for (const auto* t : {&proj, &offs, &inverse, &unseen}) {
    TORCH_CHECK(t->device() == codes.device(), "all tensors must be on the same device");
  }
  TORCH_CHECK(codes.dim() == 3, "codes must be (S, N, d)");
  const int64_t steps = codes.size(0), n = codes.size(1), d = codes.size(2);
  TORCH_CHECK(d > 0 && d % 2 == 0 && d <= kMaxCodeWidth, "codes must be an even width up to ", kMaxCodeWidth,
              ", got ", d);
  TORCH_CHECK(proj.dim() == 2 && proj.size(1) == d, "proj must be (texts, d)");
  const int64_t texts = proj.size(0);
  TORCH_CHECK(texts >= 2 && texts <= kMaxTexts, "proj must hold 2 to ", kMaxTexts, " texts, got ", texts);
  TORCH_CHECK(offs.dim() == 1 && offs.size(0) == texts, "offs must be (texts,)");
  TORCH_CHECK(inverse.dim() == 2 && inverse.size(0) == steps && inverse.size(1) == n, "inverse must be (S, N)");
  TORCH_CHECK(unseen.dim() == 2 && unseen.size(0) == steps && unseen.size(1) == n, "unseen must be (S, N)");
  TORCH_CHECK(reinterpret_cast<std::uintptr_t>(codes.data_ptr()) % 4 == 0 &&
              reinterpret_cast<std::uintptr_t>(proj.data_ptr()) % 4 == 0,
              "codes and proj must be 4-byte aligned (read as pairs of float16)");

  const c10::cuda::CUDAGuard guard(codes.device());
  auto out = torch::empty({steps, n}, codes.options());
  LerfRelevancyArgs args{};
  args.codes = reinterpret_cast<const uint16_t*>(codes.data_ptr());
  args.proj = reinterpret_cast<const uint16_t*>(proj.data_ptr());
  args.offs = offs.data_ptr<float>();
  args.inverse = inverse.data_ptr<float>();
  args.unseen = reinterpret_cast<const uint8_t*>(unseen.data_ptr<bool>());
  args.rows = steps * n;
  args.d = static_cast<int>(d);
  args.texts = static_cast<int>(texts);
  args.out = reinterpret_cast<uint16_t*>(out.data_ptr());
  const cudaError_t err = launch_lerf_relevancy(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "lerf_relevancy kernel failed: ", cudaGetErrorString(err));
  return out;
}

std::vector<torch::Tensor> grid_knn(const torch::Tensor& points, const torch::Tensor& order, const torch::Tensor& cells,
                                    const torch::Tensor& starts, const torch::Tensor& counts,
                                    const torch::Tensor& offsets, const torch::Tensor& query_points,
                                    const torch::Tensor& query_keys, const torch::Tensor& query_ids, int64_t k) {
  for (const auto* t : {&points, &query_points}) {
    TORCH_CHECK(t->is_cuda() && t->scalar_type() == torch::kFloat64 && t->is_contiguous(),
                "points and query_points must be contiguous float64 CUDA tensors");
  }
  for (const auto* t : {&order, &cells, &starts, &counts, &offsets, &query_keys, &query_ids}) {
    TORCH_CHECK(t->is_cuda() && t->scalar_type() == torch::kInt64 && t->is_contiguous(),
                "order, cells, starts, counts, offsets, query_keys and query_ids must be contiguous int64 CUDA "
                "tensors");
    TORCH_CHECK(t->device() == points.device(), "all tensors must be on the same device");
  }
  TORCH_CHECK(query_points.device() == points.device(), "all tensors must be on the same device");
  TORCH_CHECK(points.dim() == 2 && points.size(1) == 3, "points must be (N, 3)");
  const int64_t n = points.size(0), num_cells = cells.size(0), q = query_points.size(0);
  TORCH_CHECK(order.dim() == 1 && order.size(0) == n, "order must be (N,)");
  TORCH_CHECK(starts.size(0) == num_cells && counts.size(0) == num_cells, "starts and counts must be (C,)");
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) == 27, "offsets must be (27,)");
  TORCH_CHECK(query_points.dim() == 2 && query_points.size(1) == 3, "query_points must be (Q, 3)");
  TORCH_CHECK(query_keys.size(0) == q && query_ids.size(0) == q, "query_keys and query_ids must be (Q,)");
  TORCH_CHECK(k >= 1 && k <= kMaxGridK, "k must be 1 to ", kMaxGridK, ", got ", k);

  const c10::cuda::CUDAGuard guard(points.device());
  auto out_idx = torch::empty({q, k}, order.options());
  auto out_d2 = torch::empty({q, k}, points.options());
  GridKnnArgs args{};
  args.points = points.data_ptr<double>();
  args.order = order.data_ptr<int64_t>();
  args.cells = cells.data_ptr<int64_t>();
  args.starts = starts.data_ptr<int64_t>();
  args.counts = counts.data_ptr<int64_t>();
  args.offsets = offsets.data_ptr<int64_t>();
  args.query_points = query_points.data_ptr<double>();
  args.query_keys = query_keys.data_ptr<int64_t>();
  args.query_ids = query_ids.data_ptr<int64_t>();
  args.num_cells = num_cells;
  args.q = q;
  args.k = static_cast<int>(k);
  args.out_idx = out_idx.data_ptr<int64_t>();
  args.out_d2 = out_d2.data_ptr<double>();
  const cudaError_t err = launch_grid_knn(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "grid_knn kernel failed: ", cudaGetErrorString(err));
  return {out_idx, out_d2};
}

torch::Tensor composite_pixel(const torch::Tensor& means2d, const torch::Tensor& conics,
                              const torch::Tensor& opacities, const torch::Tensor& channels,
                              const torch::Tensor& gaussian_ids, const torch::Tensor& tile_offsets,
                              const torch::Tensor& flatten_ids, int64_t tile, double px, double py) {
  check_float_cuda(means2d, "means2d");
  check_float_cuda(conics, "conics");
  check_float_cuda(opacities, "opacities");
  check_float_cuda(channels, "channels");
  TORCH_CHECK(gaussian_ids.is_cuda() && gaussian_ids.scalar_type() == torch::kInt64 && gaussian_ids.is_contiguous(),
              "gaussian_ids must be a contiguous int64 CUDA tensor");
  for (const auto* t : {&tile_offsets, &flatten_ids}) {
    TORCH_CHECK(t->is_cuda() && t->scalar_type() == torch::kInt32 && t->is_contiguous(),
                "tile_offsets and flatten_ids must be contiguous int32 CUDA tensors");
  }
  for (const auto* t : {&conics, &opacities, &channels, &gaussian_ids, &tile_offsets, &flatten_ids}) {
    TORCH_CHECK(t->device() == means2d.device(), "all tensors must be on the same device");
  }
  TORCH_CHECK(means2d.dim() == 2 && means2d.size(1) == 2, "means2d must be (M, 2)");
  const int64_t m = means2d.size(0);
  TORCH_CHECK(conics.dim() == 2 && conics.size(0) == m && conics.size(1) == 3, "conics must be (M, 3)");
  TORCH_CHECK(gaussian_ids.dim() == 1 && gaussian_ids.size(0) == m, "gaussian_ids must be (M,)");
  TORCH_CHECK(channels.dim() == 2 && channels.size(0) == opacities.size(0), "channels must be (N, C)");
  const int64_t c = channels.size(1);
  TORCH_CHECK(c >= 1 && c <= kMaxPixelChannels, "channels must have 1 to ", kMaxPixelChannels, " columns");
  const int64_t tiles = tile_offsets.numel();
  TORCH_CHECK(tile >= 0 && tile < tiles, "tile ", tile, " is outside the ", tiles, " tiles");
  TORCH_CHECK(reinterpret_cast<std::uintptr_t>(means2d.data_ptr()) % 8 == 0,
              "means2d must be 8-byte aligned (it is read as float2)");

  const c10::cuda::CUDAGuard guard(means2d.device());
  auto out = torch::empty({c + 1}, means2d.options());
  CompositePixelArgs args{};
  args.means2d = means2d.data_ptr<float>();
  args.conics = conics.data_ptr<float>();
  args.opacities = opacities.data_ptr<float>();
  args.channels = channels.data_ptr<float>();
  args.gaussian_ids = gaussian_ids.data_ptr<int64_t>();
  args.tile_offsets = tile_offsets.data_ptr<int32_t>();
  args.flatten_ids = flatten_ids.data_ptr<int32_t>();
  args.n_isects = flatten_ids.size(0);
  args.tiles = static_cast<int>(tiles);
  args.tile = static_cast<int>(tile);
  args.px = static_cast<float>(px);
  args.py = static_cast<float>(py);
  args.c = static_cast<int>(c);
  args.out = out.data_ptr<float>();
  const cudaError_t err = launch_composite_pixel(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "composite_pixel kernel failed: ", cudaGetErrorString(err));
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("transform_gaussians", &transform_gaussians,
        "Batched rigid transform of Gaussians with SH rotation (means, quats, log_scales, sh_rest, "
        "object_index, params) -> [means, quats, log_scales, sh_rest]");
  m.def("accumulate_contributions", &accumulate_contributions,
        "Per-Gaussian sums of alpha x transmittance over the pixels of each label (means2d, conics, opacities, "
        "labels, tile_offsets, flatten_ids, num_labels, tile_size) -> votes (N, num_labels)");
  m.def("lerf_relevancy", &lerf_relevancy,
        "LERF relevancy of every code against a positive text and its negatives (codes (S, N, d) float16, "
        "proj (texts, d) float16, offs (texts,), inverse (S, N), unseen (S, N) bool) -> (S, N) float16");
  m.def("grid_knn", &grid_knn,
        "k nearest of each query among the points of its 27 grid cells (points sorted by cell, order, cells, "
        "starts, counts, offsets, query_points, query_keys, query_ids, k) -> [indices (Q, k), squared distances]");
  m.def("composite_pixel", &composite_pixel,
        "One pixel composited from its tile as gsplat's rasterizer does (means2d, conics, opacities, channels, "
        "gaussian_ids, tile_offsets, flatten_ids, tile, px, py) -> (C + 1,) channels then alpha");
  m.attr("params_per_object") = kParamsPerObject;
  m.attr("max_grid_k") = kMaxGridK;
  m.attr("max_pixel_channels") = kMaxPixelChannels;
  m.attr("max_code_width") = kMaxCodeWidth;
  m.attr("max_texts") = kMaxTexts;
}
