#include <catch2/catch.hpp>
#include <smax/smax.hpp>
TEST_CASE("smoke") {
  Eigen::VectorXf v(3);
  v << 1, 2, 3;
  Eigen::VectorXf p = smax::softmax(v);
  CHECK(p.sum() == Approx(1.0f));
}
