#!/usr/bin/env python3
"""Writes the hand-made seed corpus of the fuzz targets (corpus/<target>/seed-*).

The byte formats are documented at the top of fuzz_softmax.cpp and fuzz_cross_entropy.cpp; this
script is their encoder, so that each seed states in words which region it covers. It also writes
the hand-minimized reproducers of the findings (finding-*, see README.md); the corpus also holds
inputs the fuzzer found that reach new code (cov-*), which are not written here.

    python3 tests/fuzz/make_seeds.py          # rewrites corpus/*/seed-* and corpus/*/finding-*
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- values (fuzz_common.hpp) -------------------------------------------------------------------

# Palette codes of the special values (special_value<T>).
POS0, NEG0, INF, NINF, NAN, NAN_PAYLOAD, MAX, NMAX, DENORM, NDENORM, MIN, BIG_SUB = range(12)
HALF_MAX, NEG34MAX, E30, NE30, ONE, NONE, LOW3, X885, XM104, XM746, EPS, NINF2 = range(12, 24)

ENC_PALETTE, ENC_FINE, ENC_RAW = 0, 1, 2
# offset_of() table indices and scale_of() table indices
OFF = {0: 0, 1e4: 3, -1e4: 4, 1e30: 5, -1e30: 6, 88: 7, -100: 8, 709.5: 9, 1e7: 10, 3e38: 11,
       -3e38: 12, 1e-3: 13, 1e300: 14, 16777216: 15}
SCALE = {1: 0, 0.125: 2, 8: 3, 64: 4, 1e-20: 5, 1e20: 6, 1024: 7}


def spec(enc=ENC_PALETTE, offset=0, scale=1, special_rate=0):
    """Two bytes of a value_spec: encoding, offset, scale, rate of specials past the end."""
    a = enc | ((OFF[offset] << 2) | 0x80 if offset != 0 else 0)
    b = SCALE[scale] | ((special_rate // 8) << 3)
    return bytes([a, b & 0xff])


def ordinary(v, scale=1):
    """The palette code of the ordinary value v (with the spec's scale, no offset)."""
    c = int(round(v / scale * 8)) + 140
    assert 24 <= c <= 255, v
    return c


def layout(offset=0, inner=1, pad=0, alias=None):
    """Two bytes of read_layout: start offset, inner stride (1..4), outer padding, aliasing."""
    a = offset & 15
    if inner > 1:
        a |= ((inner - 1) << 4) | 0x40
    b = pad if pad < 7 else 7
    if alias is not None:  # 0: outer 0, 1: inner 0, 2: outer 1, 3: both 0 (inputs only)
        b |= 0xc0 | (alias << 3)
    return bytes([a, b])


def shape(n, k):
    return bytes([n, k & 0xff, k >> 8])


SEED = b"\x01\x02\x03\x04"

# ---- fuzz_softmax -------------------------------------------------------------------------------


def softmax_case(n, k, double=False, row_major=True, colwise=False, vector=False, xs=spec(),
                 dys=spec(), y_src=0, logp_src=0, placement=0, into_dy=False, bad_out=False,
                 bad_out_rows=False, bad_dy=False, lay_in=layout(), lay_dy=layout(),
                 lay_out=layout(), x=b"", dy=b""):
    flags = double | (row_major << 1) | (colwise << 2) | (vector << 3)
    place = placement | (into_dy << 2) | ((3 << 3) if bad_out else 0) | (bad_out_rows << 5)
    place |= 0xc0 if bad_dy else 0
    src = y_src | (logp_src << 2)
    return (bytes([flags]) + shape(n, k) + SEED + xs + dys + bytes([src, place]) + lay_in +
            lay_dy + lay_out + bytes(x) + bytes(dy))


def softmax_seeds():
    s = {}
    mixed = [ordinary(1), NINF, ordinary(-3), POS0, ordinary(2.5), MAX, ordinary(-7)]
    s["specials-rowmajor-float"] = softmax_case(
        5, 7, x=mixed + [NINF] * 7 + [NAN] + mixed[1:] + [INF] + mixed[1:] + [DENORM, NDENORM,
                                                                              MIN, BIG_SUB, NEG0,
                                                                              EPS, ONE],
        dy=[ordinary(v / 4) for v in range(-17, 18)])
    s["masked-colmajor-double"] = softmax_case(
        9, 3, double=True, row_major=False,
        x=[NINF, NINF, NINF, NINF, ordinary(0), NINF, MAX, NMAX, ordinary(1), NAN_PAYLOAD, ONE,
           ONE, X885, XM104, XM746, INF, NINF, ordinary(2), HALF_MAX, NEG34MAX, LOW3, E30, NE30,
           ordinary(-1), POS0, NEG0, ONE])
    s["k0"] = softmax_case(4, 0)
    s["k1-double"] = softmax_case(7, 1, double=True, row_major=False,
                                  x=[ordinary(3), NINF, NAN, INF, MAX, NMAX, DENORM])
    s["vector-k17-huge"] = softmax_case(1, 17, vector=True,
                                        x=[MAX, ordinary(1), ordinary(2), ordinary(3)] +
                                        [NMAX] * 6 + [HALF_MAX] * 7)
    s["colwise-strided-offset1e30-shared"] = softmax_case(
        13, 33, colwise=True, xs=spec(offset=1e30, scale=1e20), placement=2,
        lay_in=layout(offset=3, inner=2, pad=3), lay_out=layout(offset=1, inner=1, pad=5))
    s["colwise-colmajor-inplace-double"] = softmax_case(
        20, 200, double=True, row_major=False, colwise=True, xs=spec(ENC_FINE, scale=8),
        placement=1, lay_in=layout(offset=1, pad=2))
    s["long-row-offset1e4"] = softmax_case(1, 4096, xs=spec(ENC_FINE, offset=1e4, scale=64,
                                                            special_rate=8))
    s["bad-output-shape-double"] = softmax_case(6, 10, double=True, bad_out=True,
                                                bad_out_rows=True)
    s["bad-dy-shape"] = softmax_case(6, 10, bad_dy=True, row_major=False)
    s["backward-forward-outputs-specials"] = softmax_case(
        8, 9, y_src=0, logp_src=3, dys=spec(special_rate=64), placement=1, into_dy=True,
        xs=spec(scale=8, special_rate=32), lay_dy=layout(offset=2, inner=3, pad=1))
    s["raw-small-k-tiles"] = softmax_case(8, 16, xs=spec(ENC_RAW), dys=spec(ENC_RAW), y_src=2,
                                          logp_src=2)
    s["across-aliased-input-double"] = softmax_case(
        63, 16, double=True, row_major=False, xs=spec(ENC_FINE, scale=8, special_rate=16),
        lay_in=layout(alias=0), lay_out=layout(offset=5, inner=2, pad=1), y_src=1, logp_src=1)
    s["underflow-exp-spread"] = softmax_case(
        4, 130, xs=spec(ENC_FINE, offset=-100, scale=8), dys=spec(ENC_FINE), y_src=1,
        logp_src=0)
    return s


# ---- fuzz_cross_entropy -------------------------------------------------------------------------

CALL = {"loss": 0, "grad": 1, "per_row": 2, "per_row_grad": 3, "shard": 4, "from_stats": 7}
RED = {"mean": 0, "sum": 1, "none": 2}
IGNORE = {-100: 0, 0: 3, 1: 4, "k-1": 5, -1: 6, "min": 7}
SMOOTH = {0: 0, 0.1: 0x80, 1: 0x81, 0.5: 0x82, 1e-30: 0x83, -0.1: 0x88, 1.5: 0x89, "nan": 0x8a}
ZL = {0: 0, 1e-4: 0x80, 0.02: 0x81, 1: 0x82, 1e3: 0x83, -1e-4: 0x86, "inf": 0x88, 1e30: 0x85,
      1e300: 0x8a}
CAP = {0: 0, 5: 0x80, 30: 0x81, 1: 0x82, 1e30: 0x86, 1e-40: 0x88, 5e-324: 0x89, 1e300: 0x8a,
       -1: 0x8b, "nan": 0x8c}
# class weights: size (0: K, 5: K-1, 6: K+1, 7: 1) and how they are drawn (0: multiples of 1/16,
# 6: with zeros, 7: all zero, 11: negative, 12: NaN/inf)
def weights(size=0, how=0):
    return 0x80 | size | (how << 3)


def label(v):
    """Two bytes of a label: a class, 'ignore', or ('invalid', index of label_of's table)."""
    if v == "ignore":
        return bytes([216, 0])
    if isinstance(v, tuple):
        return bytes([240 + v[1], 0])
    return bytes([v >> 8, v & 0xff])


def ce_case(n, k, double=False, row_major=True, probs=False, int64=False, what="grad",
            in_place=False, xs=spec(), reduction="mean", ignore=-100, rates=0, smoothing=0, z=0,
            cap=0, weights_spec=0, target_spec=0, grad_home=0, losses_home=0, bad=0, shards=1,
            lays=(layout(),) * 5, x=b"", labels=(), targets=b"", w=b"", dloss=b"", cuts=()):
    flags = double | (row_major << 1) | (probs << 2) | (int64 << 3) | (CALL[what] << 4)
    flags |= in_place << 7
    ob = RED[reduction] | (IGNORE[ignore] << 2) | (rates << 5)
    mem = grad_home | (losses_home << 2) | ((11 + bad) << 4 if bad else 0)
    body = (bytes([flags]) + shape(n, k) + SEED + xs + bytes([ob, SMOOTH[smoothing], ZL[z],
                                                              CAP[cap], weights_spec,
                                                              target_spec, mem, shards - 1]))
    body += b"".join(lays)
    body += bytes(x)
    body += b"".join(label(v) for v in labels) if not probs else bytes(targets)
    body += bytes(w) + bytes(dloss)
    body += b"".join(struct.pack("<H", c) for c in cuts)
    return body


def ce_seeds():
    s = {}
    x65 = [ordinary(v / 2) for v in (-3, 1, 4, -1, 5, 9, -2, 6, -5, 3, 5, -8, 9, 7, -9, 3, 2, 3,
                                     8, -4, 6, 2, 6, -4, 3, 3, 8, -3, 2, 7)]
    s["defaults-float-int32"] = ce_case(6, 5, x=x65, labels=[0, 4, 2, 1, 3, 0])
    s["all-options-inplace-double-int64"] = ce_case(
        6, 5, double=True, row_major=False, int64=True, in_place=True, smoothing=0.1, z=1e-4,
        cap=30, weights_spec=weights(), x=x65, labels=[0, "ignore", 2, 1, "ignore", 4],
        w=[5, 17, 33, 2, 47])
    s["probs-per-row-dloss-zero-weights"] = ce_case(
        5, 6, probs=True, what="per_row_grad", weights_spec=weights(how=6), smoothing=0.5, z=0.02,
        x=x65, targets=[0, 50, 150, 0, 0, 200, 210, 216, 100, 100, 0, 0, 199, 1, 0, 0, 0, 0, 30,
                        30, 30, 30, 30, 30, 0, 0, 0, 0, 0, 220],
        w=[0, 1, 2, 3, 4, 5], dloss=[0, 200, 60, 140, 10],
        lays=(layout(), layout(offset=1, inner=2), layout(offset=3, pad=2), layout(inner=3),
              layout(offset=2)))
    s["shard3-smoothing-weights-double"] = ce_case(
        6, 5, double=True, what="shard", shards=3, smoothing=0.1, weights_spec=weights(),
        reduction="sum", x=x65, labels=[0, 4, "ignore", 1, 3, 2], w=[1, 2, 3, 4, 5],
        cuts=[2, 3])
    s["from-stats-float-z"] = ce_case(6, 5, what="from_stats", shards=2, z=1e-4, cap=5, x=x65,
                                      labels=[1, 1, 2, 3, 4, 0], cuts=[4])
    s["invalid-label"] = ce_case(6, 5, x=x65, labels=[0, 1, ("invalid", 0), 2, 3, 4])
    s["invalid-smoothing"] = ce_case(6, 5, smoothing=1.5, x=x65, labels=[0] * 6)
    s["invalid-z-negative"] = ce_case(6, 5, z=-1e-4, what="per_row", x=x65, labels=[0] * 6)
    s["invalid-softcap-nan"] = ce_case(6, 5, cap="nan", x=x65, labels=[0] * 6)
    s["invalid-weights-size"] = ce_case(6, 5, weights_spec=weights(size=5), x=x65,
                                        labels=[0] * 6)
    s["invalid-reduction-none"] = ce_case(6, 5, reduction="none", x=x65, labels=[0] * 6)
    s["k0"] = ce_case(3, 0)
    s["k1-n0-sum"] = ce_case(0, 1, reduction="sum", double=True)
    s["grad-overlaps-logits"] = ce_case(6, 5, grad_home=2, x=x65, labels=[0] * 6,
                                        lays=(layout(), layout(), layout(offset=7), layout(),
                                              layout()))
    s["losses-are-dloss"] = ce_case(6, 5, what="per_row_grad", losses_home=1, x=x65,
                                    labels=[0, 1, 2, 3, 4, "ignore"], dloss=[200, 60, 0, 130, 17,
                                                                             255])
    s["special-logits-masked-labels"] = ce_case(
        6, 4, double=True, smoothing=0.1, x=[NINF, NINF, NINF, NINF, ordinary(1), NINF,
                                             ordinary(2), ordinary(0), NAN, ordinary(1), ONE,
                                             ONE, INF, ordinary(0), ONE, ONE, MAX, NMAX,
                                             HALF_MAX, ordinary(3), NINF, ordinary(2), ONE,
                                             ordinary(-1)],
        labels=[0, 1, 2, 3, 3, 0])
    s["bad-shapes-losses"] = ce_case(6, 5, what="per_row_grad", bad=4, x=x65, labels=[0] * 6)
    s["confident-double"] = ce_case(1, 2, double=True, xs=spec(ENC_RAW),
                                    x=struct.pack("<dd", 37.42994775023705, 0.0), labels=[0])
    s["k1000-float-colmajor-strided"] = ce_case(
        4, 1000, row_major=False, xs=spec(ENC_FINE, scale=8), smoothing=0.1,
        weights_spec=weights(how=8), lays=(layout(offset=1, inner=2, pad=3),) * 5)
    return s


# ---- the findings (README.md), minimized by hand ---------------------------------------------------


def softmax_findings():
    s = {}
    # 1: log_softmax_backward, logp = [-720, 0], dlogp = [0, 1e20] (double): exp(-720) is
    # subnormal, so dx_0 = -exp(-720) * 1e20 = -1.9e-293 keeps only exp's absolute error.
    s["1-log-softmax-backward-subnormal-exp"] = softmax_case(
        1, 2, double=True, vector=True, xs=spec(scale=64), dys=spec(scale=1e20), logp_src=2,
        x=[ordinary(-720, 64), ordinary(0, 64)], dy=[ordinary(0, 1e20), ordinary(1e20, 1e20)])
    return s


def ce_findings():
    s = {}
    two = [ordinary(0), ordinary(1)]
    # 2: option values valid as doubles whose conversion to T breaks the kernels: loss NaN.
    s["2a-softcap-1e-40-float"] = ce_case(1, 2, what="loss", cap=1e-40, x=two, labels=[0])
    s["2b-softcap-1e300-float"] = ce_case(1, 2, what="loss", cap=1e300, x=two, labels=[0])
    s["2c-softcap-5e-324-double"] = ce_case(1, 2, double=True, what="loss", cap=5e-324, x=two,
                                            labels=[0])
    s["2d-zloss-1e300-float"] = ce_case(1, 1, what="loss", z=1e300, x=[ordinary(0)], labels=[0])
    # 4: huge finite float logits: the loss fits in float, an intermediate of the kernel does not.
    s["4a-smoothing-sum-overflow-float"] = ce_case(1, 2, what="loss", smoothing=0.5,
                                                   x=[MAX, NMAX], labels=[0])
    s["4b-probs-shifted-logit-overflow-float"] = ce_case(1, 2, what="loss", probs=True,
                                                         x=[MAX, NEG34MAX], targets=[0, 100])
    s["4c-zloss-gradient-term-overflow-float"] = ce_case(1, 2, what="grad", z=1, reduction="sum",
                                                         x=[MAX, MAX], labels=[0])
    s["4d-mean-total-overflow-double"] = ce_case(2, 2, double=True, what="loss",
                                                 x=[ordinary(0), NEG34MAX] * 2, labels=[1, 1])
    # 3: soft-capping a masked (-inf) double logit: xsimd's tanh converts inf to int64 (UB).
    s["3-softcap-masked-logit-double"] = ce_case(1, 2, double=True, what="loss", cap=30,
                                                 x=[NINF, ordinary(0)], labels=[1])
    # 5: vocabulary-parallel calls with N = 0: pointer arithmetic on the empty statistics' null
    # data() (UB).
    s["5a-shard-empty-batch"] = ce_case(0, 3, what="shard", reduction="sum")
    s["5b-from-stats-empty-batch"] = ce_case(0, 3, what="from_stats", reduction="sum")
    # 6: merging an empty or fully masked shard with a very negative row max: NaN.
    s["6a-empty-shard-negative-max-float"] = ce_case(1, 2, what="shard", shards=2,
                                                     reduction="sum", xs=spec(offset=-1e30),
                                                     x=[140, 140], labels=[0], cuts=[0])
    s["6b-masked-shard-negative-max-float"] = ce_case(1, 2, what="shard", shards=2,
                                                      reduction="sum", x=[NINF, NE30], labels=[1],
                                                      cuts=[1])
    return s


def write(target, prefix, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith(prefix):
            os.remove(os.path.join(d, f))
    for name, data in seeds.items():
        with open(os.path.join(d, prefix + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("fuzz_softmax", "seed-", softmax_seeds())
    write("fuzz_cross_entropy", "seed-", ce_seeds())
    write("fuzz_softmax", "finding-", softmax_findings())
    write("fuzz_cross_entropy", "finding-", ce_findings())
