// PyTorch's CPU operators behind torch_peer.hpp.
#include "torch_peer.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/version.h>

#include <vector>

namespace smax_bench::torch_peer {

int single_thread() {
  at::set_num_threads(1);
  return at::get_num_threads();
}

std::string version() {
  // show_config() lists "CPU capability usage: AVX2" (the kernel build ATen dispatches to).
  const std::string config = at::show_config(), key = "CPU capability usage: ";
  const auto at_key = config.find(key);
  const std::string cap =
      at_key == std::string::npos
          ? "unknown"
          : config.substr(at_key + key.size(), config.find('\n', at_key) - at_key - key.size());
  return std::string(TORCH_VERSION) + " (cpu capability " + cap + ")";
}

struct call::state {
  op o;
  at::Tensor a, b, out;
  // cross-entropy: int64 targets, the log-probabilities and their gradient, the loss
  std::vector<std::int64_t> targets;
  at::Tensor target, logp, grad_logp, loss, total_weight, one;
};

namespace {
at::Tensor wrap(const float* p, std::int64_t n, std::int64_t k, bool row_major) {
  const std::vector<std::int64_t> strides =
      row_major ? std::vector<std::int64_t>{k, 1} : std::vector<std::int64_t>{1, n};
  return at::from_blob(const_cast<float*>(p), {n, k}, strides, at::kFloat);
}
}  // namespace

call::call(op o, std::int64_t n, std::int64_t k, bool row_major, const float* a, const float* b,
           float* out, const int* labels)
    : s_(new state{o, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}}) {
  s_->a = wrap(a, n, k, row_major);
  if (b != nullptr) s_->b = wrap(b, n, k, row_major);
  if (out != nullptr) s_->out = wrap(out, n, k, row_major);
  if (o == op::ce_fwd || o == op::ce_fwdbwd) {
    s_->targets.assign(labels, labels + n);
    s_->target = at::from_blob(s_->targets.data(), {n}, at::kLong);
    s_->logp = at::empty_like(s_->a);
    s_->grad_logp = at::empty_like(s_->a);
    s_->loss = at::empty({}, at::kFloat);
    s_->total_weight = at::empty({}, at::kFloat);
    s_->one = at::ones({}, at::kFloat);
  }
}

call::~call() = default;

void call::operator()() {
  state& s = *s_;
  switch (s.o) {
    // An out= tensor of other strides than ATen's (contiguous) result is not written in its own
    // layout: column-major takes the result as a new tensor and copies it over.
    case op::softmax:
      if (s.out.is_contiguous()) {
        at::_softmax_out(s.out, s.a, 1, false);
      } else {
        s.out.copy_(at::_softmax(s.a, 1, false));
      }
      break;
    case op::log_softmax:
      if (s.out.is_contiguous()) {
        at::_log_softmax_out(s.out, s.a, 1, false);
      } else {
        s.out.copy_(at::_log_softmax(s.a, 1, false));
      }
      break;
    case op::softmax_backward:
      at::_softmax_backward_data_out(s.out, s.b, s.a, 1, at::kFloat);
      break;
    case op::log_softmax_backward:
      at::_log_softmax_backward_data_out(s.out, s.b, s.a, 1, at::kFloat);
      break;
    case op::ce_fwd:
    case op::ce_fwdbwd:
      // What F.cross_entropy(x, y) runs forward, and what its backward runs (autograd's
      // nll_loss_backward, then log_softmax_backward).
      at::_log_softmax_out(s.logp, s.a, 1, false);
      at::nll_loss_forward_out(s.loss, s.total_weight, s.logp, s.target, {}, at::Reduction::Mean,
                               -100);
      if (s.o == op::ce_fwdbwd) {
        at::nll_loss_backward_out(s.grad_logp, s.one, s.logp, s.target, {}, at::Reduction::Mean,
                                  -100, s.total_weight);
        at::_log_softmax_backward_data_out(s.out, s.grad_logp, s.logp, 1, at::kFloat);
      }
      break;
  }
}

float call::loss() const { return s_->loss.item<float>(); }

}  // namespace smax_bench::torch_peer
