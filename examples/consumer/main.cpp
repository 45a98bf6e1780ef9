// Uses the installed smax: a softmax and the fused cross-entropy. Exits 1 on a wrong answer.
#include <smax/smax.hpp>

#include <cmath>
#include <iostream>

int main() {
  Eigen::MatrixXf logits(2, 3);
  logits << 2, 1, 0,  // sample 0
      0, 0, 0;        // sample 1
  Eigen::VectorXi labels(2);
  labels << 0, 2;

  const Eigen::MatrixXf p = smax::softmax(logits);
  Eigen::MatrixXf grad(2, 3);
  const float loss = smax::cross_entropy(logits, labels, grad);
  std::cout << "softmax:\n" << p << "\ncross-entropy: " << loss << '\n';

  // The mean of -log p(label) = (0.40761 + ln 3) / 2; each row of the gradient, p - onehot
  // divided by 2, sums to 0.
  const bool ok = std::abs(loss - 0.753109f) < 1e-5f && grad.rowwise().sum().norm() < 1e-6f;
  std::cout << (ok ? "ok" : "WRONG") << '\n';
  return ok ? 0 : 1;
}
