#!/usr/bin/python3
"""Markdown table of a smax_bench JSON file (--benchmark_out=... --benchmark_out_format=json).

One row per (op, layout, regime, K); one column per implementation, in elements per second
(G/s); then ratios: smax / the naive Eigen row loop, smax / oneDNN and smax / PyTorch (same
layout), smax as a
percentage of memcpy over the same bytes (out-of-cache rows only) and of a bare vectorized exp,
and, on column-major rows, the time of smax on column-major over smax on row-major data.

Runs are grouped by the label every benchmark sets (op=... impl=... layout=... regime=...) and
the K and N counters. With --benchmark_repetitions, the median aggregate is used; without,
the mean of the runs of a name.

Usage: /usr/bin/python3 bench/table.py bench/results/sweep.json [--op softmax] [--regime cache]
       /usr/bin/python3 bench/table.py bench/results/sweep.json --summary | --variants
       /usr/bin/python3 bench/table.py bench/results/threads.json --threads
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
    ("torch", "PyTorch"),
    ("smax_bf16", "smax bf16"),
    ("smax_f64", "smax double"),
    ("smax_2pass", "smax 2-pass"),
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
        key = (label["op"], label["impl"], label["layout"], label["regime"], int(b["K"]),
               int(b["N"]))
        rates[key].append(b["items_per_second"])
        meta[key] = {"N": int(b["N"]), "label": label}
    # One K in one regime at two batch sizes (the threads binary's single row of 262144 next to
    # 4 rows of it): the smaller batch is the regime "row", not averaged with the other.
    ns = defaultdict(set)
    for key in rates:
        ns[key[:5]].add(key[5])
    out = {}
    for key, values in rates.items():
        regime = key[3]
        if len(ns[key[:5]]) > 1 and key[5] == min(ns[key[:5]]):
            regime = "row"
        out[key[:3] + (regime, key[4])] = dict(meta[key], rate=statistics.mean(values))
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
            ["smax / Eigen loop", "smax / oneDNN", "smax / PyTorch", "smax % memcpy", "smax % exp",
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
                        fmt_ratio(smax, row.get("torch")),
                        fmt_pct(smax, base["copy"]) if regime == "memory" else "",
                        fmt_pct(smax, base["exp"]),
                        # time ratio = inverse rate ratio
                        fmt_ratio(smax_row, smax) if layout == "col" else "",
                    ]
                    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(results):
    """The README's table: one row per K, float, one thread. softmax row-major cache-resident
    (smax and ratios to the Eigen loop, oneDNN and PyTorch), out of cache (smax and % of memcpy),
    column-major (time over row-major), and the fused cross-entropy forward+backward (smax,
    ratios to the Eigen row loop and PyTorch, % of memcpy out of cache)."""
    def rate(op, impl, layout, regime, k):
        r = results.get((op, impl, layout, regime, k))
        return None if r is None else r["rate"]

    def copy(regime, k):
        return rate("copy", "memcpy", "flat", regime, k)

    head = ["K", "softmax G/s", "× Eigen loop", "× oneDNN", "× PyTorch", "out of cache G/s",
            "% memcpy", "col-major time / row-major", "CE fwd+bwd G/s", "× Eigen loop",
            "× PyTorch", "out of cache % memcpy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:"] * len(head)) + "|"]
    ks = sorted({k[4] for k in results if k[0] == "softmax"})
    for k in ks:
        sm = rate("softmax", "smax", "row", "cache", k)
        smm = rate("softmax", "smax", "row", "memory", k)
        col = rate("softmax", "smax", "col", "cache", k)
        ce = rate("ce_fwdbwd", "smax", "row", "cache", k)
        cem = rate("ce_fwdbwd", "smax", "row", "memory", k)
        cells = [str(k), fmt_rate(sm), fmt_ratio(sm, rate("softmax", "eigen_loop", "row", "cache", k)),
                 fmt_ratio(sm, rate("softmax", "dnnl", "row", "cache", k)),
                 fmt_ratio(sm, rate("softmax", "torch", "row", "cache", k)), fmt_rate(smm),
                 fmt_pct(smm, copy("memory", k)), fmt_ratio(sm, col), fmt_rate(ce),
                 fmt_ratio(ce, rate("ce_fwdbwd", "eigen_loop", "row", "cache", k)),
                 fmt_ratio(ce, rate("ce_fwdbwd", "torch", "row", "cache", k)),
                 # memcpy moves 8 bytes per element, as fwd+bwd does (read logits, write grad)
                 fmt_pct(cem, copy("memory", k))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variants(results):
    """Other element types and the backward passes, row-major, one row per K: bf16 logits (in
    and out) and double against float smax in elements/s, cache-resident and out of cache; the
    backward passes against the Eigen row loop and PyTorch."""
    def rate(op, impl, regime, k):
        r = results.get((op, impl, "row", regime, k))
        return None if r is None else r["rate"]

    head = ["K", "softmax bf16 G/s", "× float", "out of cache × float", "log_softmax bf16 × float",
            "CE fwd+bwd bf16 × float", "out of cache × float", "softmax double G/s",
            "softmax_backward G/s", "× Eigen loop", "× PyTorch", "log_softmax_backward G/s",
            "× Eigen loop", "× PyTorch",
            "2-pass / 3-pass softmax", "out of cache"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:"] * len(head)) + "|"]
    for k in sorted({k[4] for k in results if k[1] == "smax_bf16"}):
        bf = rate("softmax", "smax_bf16", "cache", k)
        cells = [str(k), fmt_rate(bf),
                 fmt_ratio(bf, rate("softmax", "smax", "cache", k)),
                 fmt_ratio(rate("softmax", "smax_bf16", "memory", k),
                           rate("softmax", "smax", "memory", k)),
                 fmt_ratio(rate("log_softmax", "smax_bf16", "cache", k),
                           rate("log_softmax", "smax", "cache", k)),
                 fmt_ratio(rate("ce_fwdbwd", "smax_bf16", "cache", k),
                           rate("ce_fwdbwd", "smax", "cache", k)),
                 fmt_ratio(rate("ce_fwdbwd", "smax_bf16", "memory", k),
                           rate("ce_fwdbwd", "smax", "memory", k)),
                 fmt_rate(rate("softmax", "smax_f64", "cache", k))]
        for op in ("softmax_backward", "log_softmax_backward"):
            sm = rate(op, "smax", "cache", k)
            cells += [fmt_rate(sm), fmt_ratio(sm, rate(op, "eigen_loop", "cache", k)),
                      fmt_ratio(sm, rate(op, "torch", "cache", k))]
        for regime in REGIMES:
            cells.append(fmt_ratio(rate("softmax", "smax_2pass", regime, k),
                                   rate("softmax", "smax", regime, k)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def threads(results):
    """smax on 2 threads over 1 (same run), per op and regime; out of cache also as a percentage
    of a 2-thread memcpy over the same bytes."""
    def rate(op, impl, regime, k):
        for key, r in results.items():
            if key[0] == op and key[1] == impl and key[3] == regime and key[4] == k:
                return r["rate"]
        return None

    ops = [o for o in ("softmax", "log_softmax", "ce_fwdbwd") if any(k[0] == o for k in results)]
    head = ["K"]
    for op in ops:
        head += [f"{op} 2 threads G/s", "× 1 thread", "out of cache × 1 thread", "% memcpy (2 thr.)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:"] * len(head)) + "|"]
    for k in sorted({k[4] for k in results if k[1] == "smax_t2"}):
        cells = [str(k)]
        for op in ops:
            t2 = rate(op, "smax_t2", "cache", k)
            m2 = rate(op, "smax_t2", "memory", k)
            cells += [fmt_rate(t2), fmt_ratio(t2, rate(op, "smax_t1", "cache", k)),
                      fmt_ratio(m2, rate(op, "smax_t1", "memory", k)),
                      fmt_pct(m2, rate("copy", "memcpy_t2", "memory", k))]
        lines.append("| " + " | ".join(cells) + " |")
    for k in sorted({k[4] for k in results if k[1] == "smax_t2" and k[3] == "row"}):
        cells = [f"{k} (one row)"]
        for op in ops:
            t2 = rate(op, "smax_t2", "row", k)
            cells += [fmt_rate(t2), fmt_ratio(t2, rate(op, "smax_t1", "row", k)), "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json")
    p.add_argument("--op", action="append", help="only this op (repeatable)")
    p.add_argument("--regime", action="append", choices=REGIMES, help="only this regime")
    p.add_argument("--summary", action="store_true", help="the README's one-row-per-K table")
    p.add_argument("--variants", action="store_true",
                   help="bf16 and double against float, backward passes against the Eigen loop")
    p.add_argument("--threads", action="store_true", help="a threads.json: 2 threads against 1")
    args = p.parse_args(argv)
    context, results = load(args.json)
    if not results:
        sys.exit(f"{args.json}: no smax_bench results")
    dnnl = sorted({r["label"]["dnnl"] for r in results.values() if "dnnl" in r["label"]})
    print(f"Machine: {context.get('host_name', '?')}, {context.get('num_cpus', '?')} CPUs at "
          f"{context.get('mhz_per_cpu', '?')} MHz; smax arch {context.get('smax_arch', '?')}; "
          f"oneDNN {context.get('dnnl_version', '-')}"
          + (f" ({', '.join(dnnl)})" if dnnl else "")
          + f"; PyTorch {context.get('torch_version', '-')}.")
    if args.threads:
        print("Elements per second (G/s), float, row-major; regime cache: about 2^20 elements "
              "per call (L3-resident), memory: about 2^24.\n")
        print(threads(results))
        return
    print("Elements per second (G/s), single thread, float unless named; regime cache: about "
          "2^16 elements per call, memory: about 2^24.\n")
    if args.summary:
        print(summary(results))
    elif args.variants:
        print(variants(results))
    else:
        print(table(results, args.op, args.regime))


if __name__ == "__main__":
    main(sys.argv[1:])
