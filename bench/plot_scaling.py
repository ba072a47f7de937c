#!/usr/bin/env python3
"""Resolution scaling of whole backbones: LeMeViT-Tiny vs vit_tiny.

    /usr/bin/python3 bench/plot_scaling.py [--build build] [--threads 2]
        [--from-json FILE] [--out bench/results]

Runs the Google Benchmark suite's `backbone/` cases (bench/scaling_bench.cpp:
features mode, one image, 224 to 1024 pixels square) unless --from-json
gives the JSON of an earlier run, and writes OUT/scaling.json (the raw
Google Benchmark output), OUT/scaling.md (table) and OUT/scaling.png:
ms per image against pixels on log-log axes (dual cross-attention's cost
grows linearly with the pixels, self-attention's quadratically) and the
activation memory per image (Net::activation_bytes_per_image).
"""

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = re.compile(r"^backbone/(?P<model>[a-z_]+)/(?P<side>\d+)/threads:(?P<threads>\d+)")


def rows_of(result, threads):
    rows = []
    for b in result["benchmarks"]:
        m = NAME.match(b["name"])
        if not m or int(m["threads"]) != threads or b.get("run_type", "iteration") != "iteration":
            continue
        rows.append(dict(model=m["model"], side=int(m["side"]), pixels=b["pixels"], ms=b["ms/image"],
                         gflops=b["FLOP/s"] / 1e9, activation_mib=b["activation_MiB"],
                         iterations=b["iterations"]))
    return sorted(rows, key=lambda r: (r["model"], r["side"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=2, choices=(1, 2))
    ap.add_argument("--from-json", help="plot this Google Benchmark JSON instead of running the suite")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    raw = os.path.join(args.out, "scaling.json")
    if args.from_json:
        result = json.load(open(args.from_json))
    else:
        exe = os.path.join(args.build, "bench", "lemevit_bench")
        if not os.path.exists(exe):
            sys.exit("%s not found: ninja -C %s bench/lemevit_bench" % (exe, args.build))
        subprocess.run([exe, "--benchmark_filter=^backbone/.*/threads:%d/" % args.threads,
                        "--benchmark_out=" + raw, "--benchmark_out_format=json"], check=True)
        result = json.load(open(raw))
    rows = rows_of(result, args.threads)
    if not rows:
        sys.exit("no backbone/*/threads:%d results in the JSON" % args.threads)
    if args.from_json and os.path.abspath(args.from_json) != os.path.abspath(raw):
        json.dump(result, open(raw, "w"), indent=1)
    context = result.get("context", {})
    machine = "%s, %s CPUs, %d thread(s)" % (context.get("date", "?"), context.get("num_cpus", "?"), args.threads)
    models = sorted({r["model"] for r in rows}, key=lambda m: m != "lemevit_tiny")
    with open(os.path.join(args.out, "scaling.md"), "w") as f:
        f.write("Measured %s; features mode (every stage's map, NCHW), one image, fp32.\n\n" % machine)
        f.write("| input | " + " | ".join("%s ms/img | GFLOP/s | activations" % m for m in models) + " |\n")
        f.write("|---|" + "---|---|---|" * len(models) + "\n")
        for side in sorted({r["side"] for r in rows}):
            cells = []
            for m in models:
                r = [r for r in rows if r["model"] == m and r["side"] == side]
                cells.append("%.1f | %.0f | %.0f MiB" % (r[0]["ms"], r[0]["gflops"], r[0]["activation_mib"])
                             if r else "- | - | -")
            f.write("| %dx%d | %s |\n" % (side, side, " | ".join(cells)))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    else:
        fig, (ax, mem) = plt.subplots(1, 2, figsize=(10, 4))
        for m in models:
            rs = [r for r in rows if r["model"] == m]
            px = [r["pixels"] / 1e6 for r in rs]
            line, = ax.plot(px, [r["ms"] for r in rs], "o-", label=m)
            for r in rs:
                ax.annotate("%d" % r["side"], (r["pixels"] / 1e6, r["ms"]), textcoords="offset points",
                            xytext=(4, -10), fontsize=7)
            mem.plot(px, [r["activation_mib"] for r in rs], "o-", color=line.get_color(), label=m)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("megapixels (log)")
        ax.set_ylabel("ms per image (log)")
        ax.set_title("backbone time: linear vs quadratic growth", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        mem.set_xlabel("megapixels")
        mem.set_ylabel("activation memory per image (MiB)")
        mem.set_title("planned activation memory", fontsize=9)
        mem.legend(fontsize=8)
        mem.grid(True, alpha=0.3)
        fig.suptitle("fp32, features mode, 1 image: %s" % machine, fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "scaling.png"), dpi=110)
    print("wrote %s/scaling.{json,md,png}" % args.out)


if __name__ == "__main__":
    main()
