// Torch bindings of our CUDA kernels: argument checks, output allocation, launch on the current stream.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("transform_gaussians", &transform_gaussians,
        "Batched rigid transform of Gaussians with SH rotation (means, quats, log_scales, sh_rest, "
        "object_index, params) -> [means, quats, log_scales, sh_rest]");
  m.attr("params_per_object") = kParamsPerObject;
}
