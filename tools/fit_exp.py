#!/usr/bin/env python3
"""Fits the polynomial of smax's exp kernel (include/smax/detail/exp.hpp).

exp(x) = 2^n * e^r with n = round(x / ln 2) and |r| <= ln2/2 (a little more when n is rounded
without FMA). We approximate e^r = 1 + r * q(r), keeping the constant term exactly 1 so that
exp(0) == 1 exactly (the max element of every softmax row), and fit q to g(r) = (e^r - 1) / r
on [-a, a] with Chebyshev interpolation (mpmath.chebyfit, 50 digits), which is within a few
percent of minimax at these degrees. Coefficients are printed rounded to the target type as
C hex-float literals, lowest degree first, together with the relative error of the rounded
polynomial evaluated in exact arithmetic. The kernel's total error (reduction, Horner rounding,
scaling) is measured by tests/test_exp.cpp over every float in the domain.

Usage: /usr/bin/python3 tools/fit_exp.py   (needs python3-mpmath and python3-numpy from Debian)
"""
import struct

import mpmath as mp

mp.mp.dps = 50
A = mp.mpf("0.3475")  # ln2/2 = 0.34657..., plus slack for a non-FMA rounding of n


def g(r):
    return mp.expm1(r) / r if r != 0 else mp.mpf(1)


def to_float(c):
    return struct.unpack("f", struct.pack("f", float(c)))[0]


def fit(degree_q, rounding):
    coeffs, _ = mp.chebyfit(g, [-A, A], degree_q + 1, error=True)
    coeffs = [rounding(c) for c in reversed(coeffs)]  # lowest degree first
    worst = mp.mpf(0)
    for i in range(4001):
        r = -A + 2 * A * i / 4000
        q = mp.mpf(0)
        for c in reversed(coeffs):
            q = q * r + mp.mpf(c)
        approx = 1 + r * q
        worst = max(worst, abs(approx / mp.exp(r) - 1))
    return coeffs, worst


for name, deg, rnd, eps in (("float", 4, to_float, 2.0**-23), ("float", 5, to_float, 2.0**-23),
                            ("double", 10, float, 2.0**-52), ("double", 11, float, 2.0**-52)):
    coeffs, worst = fit(deg, rnd)
    print(f"{name}: e^r = 1 + r*q(r), q of degree {deg}; max rel. error {mp.nstr(worst, 3)}"
          f" = {mp.nstr(worst / eps, 3)} ulp")
    print("  " + ", ".join(float.hex(float(c)) for c in coeffs))
