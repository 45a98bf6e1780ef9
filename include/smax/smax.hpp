// smax: the softmax family for Eigen, vectorized with xsimd. The umbrella header.
#pragma once

#include "smax/cross_entropy.hpp"
#include "smax/softmax.hpp"
