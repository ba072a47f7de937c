#!/usr/bin/env python3
"""LeMeViT in C++ vs PyTorch eager, side by side on this machine.

    /usr/bin/python3 bench/compare_pytorch.py [--build build] [--threads 2]
        [--variants lemevit_tiny,...] [--batches 1,8] [--iterations 10]
        [--out bench/results]

For each variant and batch size: seeded random weights (tools/lemevit_ref.py)
are written as safetensors, PyTorch (Debian's torch, OpenBLAS/oneDNN, the
same thread count) and `lemevit bench` time the forward pass (median after
warm-up), `lemevit infer` checks that both give the same logits, and the
machine's FMA peak (register-only loop of build/bench/lemevit_bench, same
run) turns the library's GFLOP/s into a fraction of peak. A shared or
virtual machine's speed drifts by tens of percent over minutes, so each
measurement is taken in --rounds rounds that interleave PyTorch, lemevit and
the FMA loop; the table reports the medians. Writes
OUT/compare.json, OUT/compare.md (the README's table) and OUT/compare.png.

Both sides run with the same OpenMP wait policy: whatever OMP_WAIT_POLICY
says, libgomp's default (spin briefly, then sleep) when unset. The other
tools of this project set PASSIVE to stay polite on shared machines; here it
would time thread wake-ups (PASSIVE made Tiny at batch 1 about 1.5x slower
on 2 cores), so it is not set.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
import lemevit_ref  # noqa: E402
from convert import make_metadata, write_safetensors  # noqa: E402

# convert.py sets PASSIVE for itself; the lemevit runs inherit the caller's
# policy, as torch (imported above, before it) did.
if WAIT_POLICY is None:
    os.environ.pop("OMP_WAIT_POLICY", None)
else:
    os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY

ALL = ["lemevit_tiny", "lemevit_small", "lemevit_base", "lemevit_small_v2", "lemevit_tiny_v2", "vit_tiny"]


def fma_peak(build, threads):
    """GFLOP/s of the register-only FMA loop with `threads` threads."""
    exe = os.path.join(build, "bench", "lemevit_bench")
    out = subprocess.run([exe, "--benchmark_filter=peak/fma/threads:%d/" % threads,
                          "--benchmark_format=json", "--benchmark_repetitions=3",
                          "--benchmark_report_aggregates_only=true"],
                         check=True, capture_output=True, text=True).stdout
    rows = [b for b in json.loads(out)["benchmarks"] if b.get("aggregate_name") == "median"]
    return rows[0]["FLOP/s"] / 1e9


def torch_ms(model, batch, iterations):
    x = torch.randn(batch, 3, 224, 224)
    with torch.no_grad():
        for _ in range(2):
            model(x)
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(ALL))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iterations", type=int, default=10, help="timed passes per round")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved PyTorch / lemevit / FMA-peak rounds per variant and batch")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lemevit = os.path.join(args.build, "cli", "lemevit")
    os.makedirs(args.out, exist_ok=True)
    print("FMA peak, %d thread(s): %.1f GFLOP/s" % (args.threads, fma_peak(args.build, args.threads)), flush=True)
    rows, all_peaks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            model = lemevit_ref.build(name).eval()
            lemevit_ref.init_test_weights(model, seed=1)
            weights = os.path.join(tmp, name + ".safetensors")
            sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
            arch = dict(lemevit_ref.VARIANTS[name], in_chans=3, num_classes=1000)
            write_safetensors(weights, sd, make_metadata(arch, "official", "compare_pytorch.py"))
            # Same logits first: a speed-up of a wrong answer is worth nothing.
            x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            np.save(os.path.join(tmp, "x.npy"), x.numpy())
            subprocess.run([lemevit, "infer", "--weights", weights, "--input", os.path.join(tmp, "x.npy"),
                            "--output", os.path.join(tmp, "y.npy"), "--threads", str(args.threads)], check=True)
            with torch.no_grad():
                want = model.double()(x.double()).float().numpy()
            model.float()
            got = np.load(os.path.join(tmp, "y.npy"))
            err = float(np.abs(got - want).max() / np.abs(want).max())
            for batch in map(int, args.batches.split(",")):
                torch_runs, ours_runs, peaks = [], [], []
                for _ in range(args.rounds):
                    torch_runs.append(torch_ms(model, batch, args.iterations) / batch)
                    out = subprocess.run([lemevit, "bench", "--weights", weights, "--batch", str(batch),
                                          "--threads", str(args.threads), "--iterations", str(args.iterations),
                                          "--json", "-"], check=True, capture_output=True, text=True).stdout
                    ours_runs.append(json.loads(out[out.index("{"):]))
                    peaks.append(fma_peak(args.build, args.threads))
                t_ms = statistics.median(torch_runs)
                ours_ms = statistics.median(r["ms_per_image"] for r in ours_runs)
                gflops = ours_runs[0]["gflop_per_image"] / (ours_ms * 1e-3)
                peak = statistics.median(peaks)
                all_peaks += peaks
                row = dict(variant=name, batch=batch, threads=args.threads, torch_ms=t_ms,
                           lemevit_ms=ours_ms, speedup=t_ms / ours_ms, gflops=gflops, fma_peak_gflops=peak,
                           peak_fraction=gflops / peak, rel_error=err, gflop_per_image=ours_runs[0]["gflop_per_image"],
                           rounds=dict(torch_ms=torch_runs, lemevit_ms=[r["ms_per_image"] for r in ours_runs],
                                       fma_peak_gflops=peaks))
                rows.append(row)
                print("%-17s batch %d: PyTorch %8.2f ms/img  lemevit %8.2f ms/img  %5.2fx  %5.1f GFLOP/s "
                      "(%4.1f%% of %.0f peak)  rel err %.1e" % (name, batch, t_ms, ours_ms, row["speedup"], gflops,
                                                               100 * row["peak_fraction"], peak, err), flush=True)
    machine = "%s, %d thread(s), %s" % (platform.processor() or platform.machine(), args.threads,
                                         time.strftime("%Y-%m-%d"))
    try:
        cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
        machine = "%s (%d cores visible), %d thread(s), %s" % (cpu, os.cpu_count(), args.threads,
                                                              time.strftime("%Y-%m-%d"))
    except (OSError, IndexError):
        pass
    machine += ", OMP_WAIT_POLICY %s" % (WAIT_POLICY or "unset")
    peak = statistics.median(all_peaks)
    json.dump({"machine": machine, "fma_peak_gflops": peak, "torch": torch.__version__, "rounds": args.rounds,
               "rows": rows},
              open(os.path.join(args.out, "compare.json"), "w"), indent=1)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write("Measured %s; FMA peak %.1f GFLOP/s (register-only loop, median over the run; each row "
                "uses the peak measured in its own rounds). Medians of %d interleaved rounds of %d passes.\n\n"
                % (machine, peak, args.rounds, args.iterations))
        f.write("| model | batch | PyTorch ms/img | lemevit ms/img | speed-up | GFLOP/s | % of FMA peak |\n")
        f.write("|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write("| %s | %d | %.2f | %.2f | %.2fx | %.1f | %.0f%% |\n" % (
                r["variant"], r["batch"], r["torch_ms"], r["lemevit_ms"], r["speedup"], r["gflops"],
                100 * r["peak_fraction"]))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        labels = ["%s\nb%d" % (r["variant"].replace("lemevit_", ""), r["batch"]) for r in rows]
        pos = np.arange(len(rows))
        fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
        ax.bar(pos - 0.2, [r["torch_ms"] for r in rows], 0.4, label="PyTorch %s eager" % torch.__version__)
        ax.bar(pos + 0.2, [r["lemevit_ms"] for r in rows], 0.4, label="lemevit (C++)")
        for p, r in zip(pos, rows):
            ax.text(p + 0.2, r["lemevit_ms"], "%.1fx" % r["speedup"], ha="center", va="bottom", fontsize=8)
        ax.set_xticks(pos)
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("ms per image (lower is better)")
        ax.set_title("224x224, fp32, %d thread(s): %s" % (args.threads, machine.split(" (")[0]), fontsize=9)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "compare.png"), dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    print("wrote %s/compare.{json,md,png}" % args.out)


if __name__ == "__main__":
    main()
