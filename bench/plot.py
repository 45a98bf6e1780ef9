#!/usr/bin/python3
"""Plots of a smax_bench JSON file: elements per second against K (log axis), one line per
implementation and layout, the memcpy and exp baselines in grey, one PNG per (op, regime).

Usage: /usr/bin/python3 bench/plot.py bench/results/sweep.json [--out bench/results] [--suffix S]
Writes <out>/<op>_<regime><S>.png (e.g. softmax_cache.png) and prints the paths; the 2-thread
results: bench/plot.py bench/results/threads.json --suffix _threads.
"""

import argparse
import math
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from table import load, REGIMES  # noqa: E402

# (impl, layout) -> (legend, style)
LINES = [
    (("smax", "row"), "smax, row-major", dict(color="C0", marker="o")),
    (("smax", "col"), "smax, column-major", dict(color="C0", marker="o", linestyle="--")),
    (("eigen_loop", "row"), "Eigen row loop", dict(color="C1", marker="s")),
    (("eigen_expr", "row"), "Eigen expression, row-major", dict(color="C2", marker="^")),
    (("eigen_expr", "col"), "Eigen expression, column-major",
     dict(color="C2", marker="^", linestyle="--")),
    (("dnnl", "row"), "oneDNN, row-major", dict(color="C3", marker="D")),
    (("dnnl", "col"), "oneDNN, column-major", dict(color="C3", marker="D", linestyle="--")),
    (("torch", "row"), "PyTorch, row-major", dict(color="C6", marker="*")),
    (("torch", "col"), "PyTorch, column-major", dict(color="C6", marker="*", linestyle="--")),
    (("smax_bf16", "row"), "smax, bf16 in and out, row-major", dict(color="C4", marker="v")),
    (("smax_f64", "row"), "smax, double, row-major", dict(color="C5", marker="x")),
    (("smax_t1", "row"), "smax, 1 thread, row-major", dict(color="C0", marker="o")),
    (("smax_t2", "row"), "smax, 2 threads, row-major", dict(color="C9", marker="P")),
]
# (op, impl, legend, style)
BASELINES = [
    ("copy", "memcpy", "memcpy (same bytes)", dict(color="0.35", linestyle=":")),
    ("copy", "memcpy_t1", "memcpy (same bytes)", dict(color="0.35", linestyle=":")),
    ("copy", "memcpy_t2", "memcpy on 2 threads", dict(color="0.1", linestyle=":")),
    ("exp", "eigen", "exp alone (Eigen)", dict(color="0.6", linestyle="-.")),
]
REGIME_NAME = {"cache": "cache-resident", "memory": "out of cache"}


def series(results, op, impl, layout, regime):
    """(K values, G/s) of one line; impl or layout None: any (the baselines have one each)."""
    pts = sorted((k[4], r["rate"]) for k, r in results.items()
                 if k[0] == op and (impl is None or k[1] == impl) and (layout is None or k[2] == layout)
                 and k[3] == regime)
    return [p[0] for p in pts], [p[1] / 1e9 for p in pts]


def main(argv):
    here = pathlib.Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json")
    p.add_argument("--out", default=str(here / "results"))
    p.add_argument("--suffix", default="", help="appended to each file name")
    args = p.parse_args(argv)
    context, results = load(args.json)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ops = sorted({k[0] for k in results} - {b[0] for b in BASELINES},
                 key=lambda o: (o != "softmax", o))
    threaded = any(k[1] == "smax_t2" for k in results)
    for op in ops:
        for regime in REGIMES:
            fig, ax = plt.subplots(figsize=(9, 5.5))
            top = 0.0
            for (impl, layout), legend, style in LINES:
                ks, rs = series(results, op, impl, layout, regime)
                if ks:
                    ax.plot(ks, rs, label=legend, **style)
                    top = max(top, max(rs))
            if top == 0.0:
                plt.close(fig)
                continue
            for base, impl, legend, style in BASELINES:
                ks, rs = series(results, base, impl, None, regime)
                if not ks:
                    continue
                if max(rs) > 2 * top:
                    # In cache memcpy runs far above everything else: name it, don't squash.
                    legend += f": {min(rs):.1f}-{max(rs):.1f} G/s, off scale"
                    ax.plot([], [], label=legend, **style)
                else:
                    ax.plot(ks, rs, label=legend, **style)
                    top = max(top, max(rs))
            ax.set_ylim(0, 1.1 * top)
            ax.set_xscale("log")
            ax.set_xlabel("K (classes per distribution)")
            ax.set_ylabel("elements per second (G/s)")
            sizes = [r["N"] * k[4] for k, r in results.items() if k[0] == op and k[3] == regime]
            about = f"about 2^{round(math.log2(sorted(sizes)[len(sizes) // 2]))} elements" if sizes else ""
            ax.set_title(f"{op}, {REGIME_NAME[regime]} ({about}), "
                         f"{'1 and 2 threads' if threaded else 'float unless named, 1 thread'}\n"
                         f"{context.get('smax_arch', '')}, {context.get('num_cpus', '?')} CPUs "
                         f"at {context.get('mhz_per_cpu', '?')} MHz", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8, loc="best")
            fig.tight_layout()
            path = out / f"{op}_{regime}{args.suffix}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
