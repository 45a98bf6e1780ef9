// The README's first example: softmax, log-softmax and a backward pass on a small batch.
#include <smax/smax.hpp>

#include <iomanip>
#include <iostream>
#include <limits>

int main() {
  const float inf = std::numeric_limits<float>::infinity();
  Eigen::MatrixXf logits(3, 4);  // 3 samples (rows) of 4 classes
  logits << 1, 2, 3, 4,          // an ordinary row
      100, 100, 90, -inf,        // large logits (exp(100) overflows a float), a masked class
      -inf, -inf, -inf, -inf;    // a fully masked row: probabilities 0, not NaN

  Eigen::MatrixXf p = smax::softmax(logits);         // rows sum to 1 (a fully masked one: 0)
  Eigen::MatrixXf logp = smax::log_softmax(logits);  // x - max - log(sum(exp(x - max)))

  // Backward pass: from dL/dp to dL/dlogits = p * (dp - <dp, p>), without the 4 x 4 Jacobian.
  Eigen::MatrixXf dp = Eigen::MatrixXf::Zero(3, 4);
  dp(0, 3) = dp(1, 0) = -1;  // L = -(p(0, 3) + p(1, 0)), say
  Eigen::MatrixXf dlogits = smax::softmax_backward(p, dp);

  std::cout << std::fixed << std::setprecision(4);
  std::cout << "softmax:\n" << p << "\n\n";
  std::cout << "log_softmax:\n" << logp << "\n\n";
  std::cout << "dL/dlogits:\n" << dlogits << '\n';
}
