// Glue for the fused decoder-layer ops (kernels/fused_layer.cuh): checks, launch shapes.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/fused_layer.cuh"
#include "kernels/skinny_gemm.cuh"
#include "launch.h"
#include "ops.h"

namespace tinyserve {

namespace {
// Rows of a [N, C] matrix: the last dimension dense, any row stride.
void check_rows(const torch::Tensor& t, const char* name) {
  TS_CHECK_CUDA(t);
  TORCH_CHECK(t.dim() == 2 && t.stride(1) == 1, name, " must be [N, C] with a dense last dimension");
}
}  // namespace

std::vector<torch::Tensor> rms_norm(const torch::Tensor& x, const std::optional<torch::Tensor>& delta,
                                    const torch::Tensor& weight, double eps) {
  check_rows(x, "x");
  const int64_t N = x.size(0), H = x.size(1);
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.numel() == H && weight.is_contiguous(),
              "weight must be [hidden] of x's dtype");
  auto out = torch::empty({N, H}, x.options());
  torch::Tensor sum;
  if (delta.has_value()) {
    check_rows(*delta, "delta");
    TORCH_CHECK(delta->sizes() == x.sizes() && delta->scalar_type() == x.scalar_type(), "delta must match x");
    sum = torch::empty({N, H}, x.options());
  }
  if (N == 0) return delta.has_value() ? std::vector<torch::Tensor>{sum, out} : std::vector<torch::Tensor>{out};
  const c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for_element_type(x, "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    const T* xp = reinterpret_cast<const T*>(x.data_ptr());
    const T* wp = reinterpret_cast<const T*>(weight.data_ptr());
    T* op = reinterpret_cast<T*>(out.data_ptr());
    if (delta.has_value()) {
      launch_pdl(rms_norm_kernel<T, true>, dim3((unsigned)N), dim3(kNormThreads), 0, stream, xp, x.stride(0),
                 reinterpret_cast<const T*>(delta->data_ptr()), delta->stride(0), wp,
                 reinterpret_cast<T*>(sum.data_ptr()), op, (int)H, (float)eps);
    } else {
      launch_pdl(rms_norm_kernel<T, false>, dim3((unsigned)N), dim3(kNormThreads), 0, stream, xp, x.stride(0),
                 static_cast<const T*>(nullptr), int64_t{0}, wp, static_cast<T*>(nullptr), op, (int)H, (float)eps);
    }
  });
  return delta.has_value() ? std::vector<torch::Tensor>{sum, out} : std::vector<torch::Tensor>{out};
}

void rotary_embedding(torch::Tensor& q, torch::Tensor& k, const torch::Tensor& positions,
                      const torch::Tensor& inv_freq) {
  TS_CHECK_CUDA(q);
  TS_CHECK_CUDA(k);
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && q.size(0) == k.size(0) && q.size(2) == k.size(2),
              "q and k must be [N, H, D] with the same N and D");
  const int64_t N = q.size(0), D = q.size(2);
  TORCH_CHECK(D % 2 == 0, "head_dim must be even");
  TORCH_CHECK(q.stride(2) == 1 && q.stride(1) == D && k.stride(2) == 1 && k.stride(1) == D,
              "q and k heads must be dense rows of head_dim");
  TORCH_CHECK(q.scalar_type() == k.scalar_type(), "q and k must share a dtype");
  TORCH_CHECK(positions.scalar_type() == torch::kInt64 && positions.is_contiguous() && positions.numel() == N,
              "positions must be contiguous int64 [N]");
  TORCH_CHECK(inv_freq.scalar_type() == torch::kFloat32 && inv_freq.is_contiguous() && inv_freq.numel() == D / 2,
              "inv_freq must be contiguous float32 [head_dim / 2]");
  if (N == 0) return;
  const c10::cuda::CUDAGuard guard(q.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int pairs = (int)((q.size(1) + k.size(1)) * D / 2);
  const int threads = std::min(1024, ((pairs + 31) / 32) * 32);
  for_element_type(q, "rotary_embedding", [&](auto tag) {
    using T = decltype(tag);
    launch_pdl(rotary_kernel<T>, dim3((unsigned)N), dim3(threads), 0, stream, reinterpret_cast<T*>(q.data_ptr()),
               q.stride(0), (int)q.size(1), reinterpret_cast<T*>(k.data_ptr()), k.stride(0), (int)k.size(1),
               static_cast<const int64_t*>(positions.data_ptr<int64_t>()),
               static_cast<const float*>(inv_freq.data_ptr<float>()), (int)D);
  });
}

torch::Tensor silu_and_mul(const torch::Tensor& gate_up) {
  check_rows(gate_up, "gate_up");
  TORCH_CHECK(gate_up.size(1) % 2 == 0, "gate_up's last dimension must be even ([gate | up])");
  const int64_t N = gate_up.size(0), I = gate_up.size(1) / 2;
  auto out = torch::empty({N, I}, gate_up.options());
  if (N == 0 || I == 0) return out;
  TORCH_CHECK(I <= 65535 * 256, "silu_and_mul: intermediate size too large");
  const c10::cuda::CUDAGuard guard(gate_up.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int threads = 256;
  const dim3 grid((unsigned)N, (unsigned)((I + threads - 1) / threads));
  for_element_type(gate_up, "silu_and_mul", [&](auto tag) {
    using T = decltype(tag);
    launch_pdl(silu_and_mul_kernel<T>, grid, dim3(threads), 0, stream, reinterpret_cast<const T*>(gate_up.data_ptr()),
               gate_up.stride(0), reinterpret_cast<T*>(out.data_ptr()), (int)I);
  });
  return out;
}

torch::Tensor skinny_gemm(const torch::Tensor& x, const torch::Tensor& weight, const std::optional<torch::Tensor>& bias,
                          bool weight_first) {
  TS_CHECK_CUDA(x);
  TS_CHECK_CONTIG(x);
  TS_CHECK_CONTIG(weight);
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1), "x [M, K] and weight [N, K]");
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  TORCH_CHECK(M >= 1 && M <= kSkinnyMaxRows, "skinny_gemm takes 1..", kSkinnyMaxRows, " rows");
  TORCH_CHECK(K % 8 == 0 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 &&
                  reinterpret_cast<uintptr_t>(weight.data_ptr()) % 16 == 0,
              "skinny_gemm needs K % 8 == 0 and 16-byte aligned x and weight");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "x and weight must share a dtype");
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == x.scalar_type() && bias->numel() == N && bias->is_contiguous(),
                "bias must be [N] of x's dtype");
  }
  auto y = torch::empty({M, N}, x.options());
  if (N == 0) return y;
  const c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const unsigned blocks = (unsigned)((N + kSkinnyWarps - 1) / kSkinnyWarps);
  auto launch = [&](auto tag, auto rows) {
    using T = decltype(tag);
    constexpr int R = decltype(rows)::value;
    launch_pdl(skinny_gemm_kernel<T, R>, dim3(blocks), dim3(kSkinnyWarps * 32), 0, stream,
               reinterpret_cast<const T*>(x.data_ptr()), reinterpret_cast<const T*>(weight.data_ptr()),
               bias.has_value() ? reinterpret_cast<const T*>(bias->data_ptr()) : static_cast<const T*>(nullptr),
               reinterpret_cast<T*>(y.data_ptr()), (int)N, (int)K, weight_first);
  };
  auto by_rows = [&](auto tag) {
    switch (M) {
      case 1: launch(tag, std::integral_constant<int, 1>{}); break;
      case 2: launch(tag, std::integral_constant<int, 2>{}); break;
      case 3: launch(tag, std::integral_constant<int, 3>{}); break;
      default: launch(tag, std::integral_constant<int, 4>{}); break;
    }
  };
  if (x.scalar_type() == at::kHalf) by_rows(__half{});
  else if (x.scalar_type() == at::kBFloat16) by_rows(__nv_bfloat16{});
  else TORCH_CHECK(false, "skinny_gemm: no kernel for ", x.scalar_type());
  TS_LAUNCH_CHECK();
  return y;
}

}  // namespace tinyserve
