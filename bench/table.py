#!/usr/bin/python3
"""Markdown table of a smax_bench JSON file (--benchmark_out=... --benchmark_out_format=json).

One row per (op, layout, regime, K); one column per implementation, in elements per second
(G/s); then ratios: smax / the naive Eigen row loop, smax / oneDNN (same layout), smax as a
percentage of memcpy over the same bytes (out-of-cache rows only) and of a bare vectorized exp,
and, on column-major rows, the time of smax on column-major over smax on row-major data.

Runs are grouped by the label every benchmark sets (op=... impl=... layout=... regime=...) and
the K and N counters. With --benchmark_repetitions, the median aggregate is used; without,
the mean of the runs of a name.

Usage: /usr/bin/python3 bench/table.py bench/results/sweep.json [--op softmax] [--regime cache]
"""

import argparse
import json
import statistics
import sys
from collections import defaultdict

# Columns, in order: (impl, header). Baselines (op copy / exp) are shared by every op.
IMPLS = [
    ("smax", "smax"),
    ("eigen_loop", "Eigen loop"),
    ("eigen_expr", "Eigen expr"),
    ("dnnl", "oneDNN"),
]
BASELINES = [("copy", "memcpy"), ("exp", "exp")]
REGIMES = ["cache", "memory"]
LAYOUTS = ["row", "col"]


def parse_label(label):
    return dict(tok.split("=", 1) for tok in label.split() if "=" in tok)


def load(path):
    """{(op, impl, layout, regime, K): {"rate": items/s, "N": N, "label": {...}}}."""
    with open(path) as f:
        data = json.load(f)
    runs = [b for b in data.get("benchmarks", []) if not b.get("error_occurred")]
    have_medians = any(b.get("aggregate_name") == "median" for b in runs)
    rates = defaultdict(list)
    meta = {}
    for b in runs:
        if have_medians:
            if b.get("aggregate_name") != "median":
                continue
        elif b.get("run_type", "iteration") != "iteration":
            continue
        label = parse_label(b.get("label", ""))
        if "op" not in label or "items_per_second" not in b:
            continue
        key = (label["op"], label["impl"], label["layout"], label["regime"], int(b["K"]))
        rates[key].append(b["items_per_second"])
        meta[key] = {"N": int(b["N"]), "label": label}
    out = {}
    for key, values in rates.items():
        out[key] = dict(meta[key], rate=statistics.mean(values))
    return data.get("context", {}), out


def fmt_rate(r):
    return "" if r is None else f"{r / 1e9:.2f}"


def fmt_ratio(a, b):
    return "" if a is None or b is None else f"{a / b:.2f}"


def fmt_pct(a, b):
    return "" if a is None or b is None else f"{100 * a / b:.0f}%"


def table(results, ops=None, regimes=None):
    def rate(op, impl, layout, regime, k):
        r = results.get((op, impl, layout, regime, k))
        return None if r is None else r["rate"]

    def baseline(op, regime, k):
        for key, r in results.items():
            if key[0] == op and key[3] == regime and key[4] == k:
                return r["rate"]
        return None

    all_ops = sorted({k[0] for k in results} - {b for b, _ in BASELINES},
                     key=lambda o: (o != "softmax", o))
    ops = [o for o in all_ops if not ops or o in ops]
    regimes = [r for r in REGIMES if not regimes or r in regimes]
    impls = [(i, h) for i, h in IMPLS if any(k[1] == i for k in results)]

    head = (["op", "layout", "regime", "K", "N"] + [f"{h} G/s" for _, h in impls] +
            [f"{h} G/s" for _, h in BASELINES] +
            ["smax / Eigen loop", "smax / oneDNN", "smax % memcpy", "smax % exp",
             "col time / row time"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for op in ops:
        for layout in LAYOUTS:
            for regime in regimes:
                ks = sorted({k[4] for k in results
                             if k[0] == op and k[2] == layout and k[3] == regime})
                for k in ks:
                    n = next(r["N"] for key, r in results.items()
                             if key[0] == op and key[3] == regime and key[4] == k)
                    row = {i: rate(op, i, layout, regime, k) for i, _ in impls}
                    base = {b: baseline(b, regime, k) for b, _ in BASELINES}
                    smax = row.get("smax")
                    smax_row = rate(op, "smax", "row", regime, k)
                    cells = [op, layout, regime, str(k), str(n)]
                    cells += [fmt_rate(row[i]) for i, _ in impls]
                    cells += [fmt_rate(base[b]) for b, _ in BASELINES]
                    cells += [
                        fmt_ratio(smax, row.get("eigen_loop")),
                        fmt_ratio(smax, row.get("dnnl")),
                        fmt_pct(smax, base["copy"]) if regime == "memory" else "",
                        fmt_pct(smax, base["exp"]),
                        # time ratio = inverse rate ratio
                        fmt_ratio(smax_row, smax) if layout == "col" else "",
                    ]
                    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(results):
    """The README's table: one row per K, float, one thread. softmax row-major cache-resident
    (smax and ratios to the Eigen loop and oneDNN), out of cache (smax and % of memcpy), column-
    major (time over row-major), and the fused cross-entropy forward+backward (smax, ratio to the
    Eigen row loop, % of memcpy out of cache)."""
    def rate(op, impl, layout, regime, k):
        r = results.get((op, impl, layout, regime, k))
        return None if r is None else r["rate"]

    def copy(regime, k):
        return rate("copy", "memcpy", "flat", regime, k)

    head = ["K", "softmax G/s", "× Eigen loop", "× oneDNN", "out of cache G/s", "% memcpy",
            "col-major time / row-major", "CE fwd+bwd G/s", "× Eigen loop", "out of cache % memcpy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:"] * len(head)) + "|"]
    ks = sorted({k[4] for k in results if k[0] == "softmax"})
    for k in ks:
        sm = rate("softmax", "smax", "row", "cache", k)
        smm = rate("softmax", "smax", "row", "memory", k)
        col = rate("softmax", "smax", "col", "cache", k)
        ce = rate("ce_fwdbwd", "smax", "row", "cache", k)
        cem = rate("ce_fwdbwd", "smax", "row", "memory", k)
        cells = [str(k), fmt_rate(sm), fmt_ratio(sm, rate("softmax", "eigen_loop", "row", "cache", k)),
                 fmt_ratio(sm, rate("softmax", "dnnl", "row", "cache", k)), fmt_rate(smm),
                 fmt_pct(smm, copy("memory", k)), fmt_ratio(sm, col), fmt_rate(ce),
                 fmt_ratio(ce, rate("ce_fwdbwd", "eigen_loop", "row", "cache", k)),
                 # memcpy moves 8 bytes per element, as fwd+bwd does (read logits, write grad)
                 fmt_pct(cem, copy("memory", k))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json")
    p.add_argument("--op", action="append", help="only this op (repeatable)")
    p.add_argument("--regime", action="append", choices=REGIMES, help="only this regime")
    p.add_argument("--summary", action="store_true", help="the README's one-row-per-K table")
    args = p.parse_args(argv)
    context, results = load(args.json)
    if not results:
        sys.exit(f"{args.json}: no smax_bench results")
    dnnl = sorted({r["label"]["dnnl"] for r in results.values() if "dnnl" in r["label"]})
    print(f"Machine: {context.get('host_name', '?')}, {context.get('num_cpus', '?')} CPUs at "
          f"{context.get('mhz_per_cpu', '?')} MHz; smax arch {context.get('smax_arch', '?')}; "
          f"oneDNN {context.get('dnnl_version', '-')}"
          + (f" ({', '.join(dnnl)})" if dnnl else "") + ".")
    print("Elements per second (G/s), single thread, float; regime cache: about 2^16 elements "
          "per call, memory: about 2^24.\n")
    print(summary(results) if args.summary else table(results, args.op, args.regime))


if __name__ == "__main__":
    main(sys.argv[1:])
