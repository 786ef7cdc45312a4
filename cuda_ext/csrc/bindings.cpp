// Torch bindings of our CUDA kernels: argument checks, output allocation, launch on the current stream.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "accumulate_contributions.h"
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
  m.attr("params_per_object") = kParamsPerObject;
  m.attr("max_code_width") = kMaxCodeWidth;
  m.attr("max_texts") = kMaxTexts;
}
