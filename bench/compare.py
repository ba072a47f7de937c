#!/usr/bin/env python3
"""LeMeViT in C++ vs PyTorch eager and ONNX Runtime, side by side on this machine.

    /usr/bin/python3 bench/compare.py [--build build] [--threads 2]
        [--variants lemevit_tiny,...] [--batches 1,8] [--iterations 10]
        [--rounds 3] [--no-ort] [--precisions fp32,bf16,int8] [--out bench/results]

For each variant and batch size: seeded random weights (tools/lemevit_ref.py)
are written as safetensors and exported to ONNX (torch.onnx.export, opset 17,
static shapes). `lemevit infer` and ONNX Runtime must both give PyTorch's
float64 logits (relative error below 1e-5) before anything is timed. Then
PyTorch (Debian's torch, OpenBLAS/oneDNN, the same thread count), ONNX
Runtime (CPU, intra-op threads = T, inter-op 1, sequential, all graph
optimisations; bench/ort/ort_bench.js) and `lemevit bench` time the forward
pass (median after warm-up), and the machine's FMA peak (register-only loop
of build/bench/lemevit_bench, same run) turns the library's GFLOP/s into a
fraction of peak; beside it, its read bandwidth (8 MiB per thread) is
recorded per row. A shared or virtual machine's speed drifts by tens of
percent over minutes, so each measurement is taken in --rounds rounds that
interleave PyTorch, ONNX Runtime, lemevit, the FMA loop and the reads; the
table reports the medians. Writes OUT/compare.json, OUT/compare.md (the README's table)
and OUT/compare.png.

With --precisions listing bf16 and/or int8, `lemevit bench --precision P`
runs in the same rounds (right after the fp32 one), its logits are checked
against the bounds of tests/precision_test.cpp, and OUT/compare_precision.md
tables fp32, bf16 and int8 side by side with their speed-ups over fp32.
With int8 and ONNX Runtime, ORT's own int8 runs beside ours: the exported
graph with its weight MatMuls quantised as ORT's quantize_dynamic does
(bench/ort_quantize.py, needs python3-onnx), its logits checked against the
same int8 bound, timed in the same rounds.

ONNX Runtime comes from npm (its CPU library ships in onnxruntime-node):
    cd bench/ort && npm install --ignore-scripts
Without node or that package the comparison is PyTorch-only, and says so.

Every program runs with the same OpenMP wait policy: whatever OMP_WAIT_POLICY
says, libgomp's default (spin briefly, then sleep) when unset. The other
tools of this project set PASSIVE to stay polite on shared machines; here it
would time thread wake-ups (PASSIVE made Tiny at batch 1 about 1.5x slower
on 2 cores), so it is not set.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

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
ORT_DIR = os.path.join(ROOT, "bench", "ort")
ORT_SCRIPT = os.path.join(ORT_DIR, "ort_bench.js")
MAX_REL_ERROR = 1e-5
# tests/precision_test.cpp's bounds for --precision bf16 and int8.
LOWP_BOUNDS = {"bf16": 2e-2, "int8": 8e-2}


def find_ort():
    """(node executable, onnxruntime version), or (None, why not)."""
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        return None, "node is not installed (apt-get install nodejs npm)"
    package = os.path.join(ORT_DIR, "node_modules", "onnxruntime-node", "package.json")
    if not os.path.exists(package):
        return None, "onnxruntime-node is not installed (cd bench/ort && npm install --ignore-scripts)"
    return node, json.load(open(package))["version"]


def find_ort_quantize():
    """bench/ort_quantize.quantize_dynamic, or (None, why not)."""
    try:
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        from ort_quantize import quantize_dynamic
    except ImportError as e:
        return None, "ONNX Runtime int8 left out: %s (apt-get install python3-onnx)" % e
    return quantize_dynamic, None


def peak_counter(build, name, counter):
    """Median of 3 repetitions of one lemevit_bench peak/ benchmark's counter."""
    exe = os.path.join(build, "bench", "lemevit_bench")
    out = subprocess.run([exe, "--benchmark_filter=^%s$" % name,
                          "--benchmark_format=json", "--benchmark_repetitions=3",
                          "--benchmark_report_aggregates_only=true"],
                         check=True, capture_output=True, text=True).stdout
    rows = [b for b in json.loads(out)["benchmarks"] if b.get("aggregate_name") == "median"]
    return rows[0][counter]


def fma_peak(build, threads):
    """GFLOP/s of the register-only FMA loop with `threads` threads."""
    return peak_counter(build, "peak/fma/threads:%d/real_time" % threads, "FLOP/s") / 1e9


def read_bandwidth(build, threads):
    """GB/s of `threads` threads each reading 8 MiB (past L2, in L3): with
    the FMA peak, what the VM gives at the time of a round."""
    return peak_counter(build, "peak/read/KiB:8192/threads:%d/real_time" % threads, "bytes/s") / 1e9


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


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):])


def rel_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


def export_onnx(model, batch, path):
    """The deployer's path: torch.onnx.export, opset 17, static shapes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes read as Python numbers
        torch.onnx.export(model, torch.zeros(batch, 3, 224, 224), path, opset_version=17,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(ALL))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iterations", type=int, default=10, help="timed passes per round")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved PyTorch / ONNX Runtime / lemevit / FMA-peak rounds per variant and batch")
    ap.add_argument("--no-ort", action="store_true", help="leave ONNX Runtime out")
    ap.add_argument("--precisions", default="fp32", help="fp32 plus bf16 and/or int8, timed in the same rounds")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    lowp = [p for p in args.precisions.split(",") if p != "fp32"]
    if set(lowp) - set(LOWP_BOUNDS):
        ap.error("--precisions: fp32, bf16, int8")
    unknown = set(args.variants.split(",")) - set(ALL)
    if unknown:
        ap.error("unknown variant(s) %s; known: %s" % (",".join(sorted(unknown)), ",".join(ALL)))
    torch.set_num_threads(args.threads)
    lemevit = os.path.join(args.build, "cli", "lemevit")
    node, ort_version = (None, "left out (--no-ort)") if args.no_ort else find_ort()
    if node:
        print("ONNX Runtime %s (onnxruntime-node)" % ort_version, flush=True)
    else:
        print("ONNX Runtime: %s; comparing with PyTorch only." % ort_version, flush=True)
    ort_quantize = None
    if node and "int8" in lowp:
        ort_quantize, why = find_ort_quantize()
        if why:
            print(why, flush=True)
    os.makedirs(args.out, exist_ok=True)
    print("FMA peak, %d thread(s): %.1f GFLOP/s; read bandwidth %.0f GB/s" % (
        args.threads, fma_peak(args.build, args.threads), read_bandwidth(args.build, args.threads)), flush=True)
    rows, all_peaks, all_reads = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            model = lemevit_ref.build(name).eval()
            lemevit_ref.init_test_weights(model, seed=1)
            weights = os.path.join(tmp, name + ".safetensors")
            sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
            arch = dict(lemevit_ref.VARIANTS[name], in_chans=3, num_classes=1000)
            write_safetensors(weights, sd, make_metadata(arch, "official", "compare.py"))
            # Same logits first: a speed-up of a wrong answer is worth nothing.
            x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            np.save(os.path.join(tmp, "x.npy"), x.numpy())
            subprocess.run([lemevit, "infer", "--weights", weights, "--input", os.path.join(tmp, "x.npy"),
                            "--output", os.path.join(tmp, "y.npy"), "--threads", str(args.threads)], check=True)
            with torch.no_grad():
                want = model.double()(x.double()).float().numpy()
            model.float()
            err = rel_error(np.load(os.path.join(tmp, "y.npy")), want)
            if err > MAX_REL_ERROR:
                sys.exit("%s: lemevit's logits differ from PyTorch's (relative error %.1e)" % (name, err))
            lowp_err = {}
            for p in lowp:
                subprocess.run([lemevit, "infer", "--weights", weights, "--input", os.path.join(tmp, "x.npy"),
                                "--output", os.path.join(tmp, "y.npy"), "--threads", str(args.threads),
                                "--precision", p], check=True)
                lowp_err[p] = rel_error(np.load(os.path.join(tmp, "y.npy")), want)
                if lowp_err[p] > LOWP_BOUNDS[p]:
                    sys.exit("%s: lemevit %s logits differ from PyTorch's fp32 by %.1e (bound %.0e)"
                             % (name, p, lowp_err[p], LOWP_BOUNDS[p]))
            for batch in map(int, args.batches.split(",")):
                onnx = os.path.join(tmp, "%s_b%d.onnx" % (name, batch))
                onnx8 = os.path.join(tmp, "%s_b%d_int8.onnx" % (name, batch))
                ort_err = ort8_err = None
                ort = [node, ORT_SCRIPT, "--threads", str(args.threads), "--batch", str(batch)]

                def ort_error(path):
                    """ORT's logits of xb from the graph at path, against PyTorch's."""
                    subprocess.run(ort + [path, "--input", os.path.join(tmp, "x.f32"), "--output",
                                          os.path.join(tmp, "y.f32")], check=True)
                    return rel_error(np.fromfile(os.path.join(tmp, "y.f32"), np.float32).reshape(want_b.shape),
                                     want_b)

                def ort_ms(path):
                    return run_json(ort + [path, "--iterations", str(args.iterations)])["ms_per_image"]

                if node:
                    export_onnx(model, batch, onnx)
                    xb = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
                    xb.numpy().tofile(os.path.join(tmp, "x.f32"))
                    with torch.no_grad():
                        want_b = model.double()(xb.double()).numpy()
                    model.float()
                    ort_err = ort_error(onnx)
                    if ort_err > MAX_REL_ERROR:
                        sys.exit("%s: ONNX Runtime's logits differ from PyTorch's (relative error %.1e)"
                                 % (name, ort_err))
                    if ort_quantize:
                        try:  # the peer's int8 failing leaves it out of this row, not the run
                            ort_quantize(onnx, onnx8)
                            ort8_err = ort_error(onnx8)
                        except (ValueError, subprocess.CalledProcessError) as e:
                            print("%s: ONNX Runtime int8 left out: %s" % (name, e), flush=True)
                        # Timed all the same: a deployer would meet that speed with those answers
                        # (seen: ORT's AVX2 kernel without VNNI, whose VPMADDUBSW pair sums saturate).
                        if ort8_err is not None and ort8_err > LOWP_BOUNDS["int8"]:
                            print("%s: ONNX Runtime int8 logits differ from PyTorch's fp32 by %.1e (bound %.0e): "
                                  "timed, marked *" % (name, ort8_err, LOWP_BOUNDS["int8"]), flush=True)
                torch_runs, ort_runs, ort8_runs, ours_runs, peaks, reads = [], [], [], [], [], []
                time_ort8 = ort8_err is not None
                lowp_runs = {p: [] for p in lowp}
                for _ in range(args.rounds):
                    torch_runs.append(torch_ms(model, batch, args.iterations) / batch)
                    if node:
                        ort_runs.append(ort_ms(onnx))
                    if time_ort8:
                        ort8_runs.append(ort_ms(onnx8))
                    ours_runs.append(run_json([lemevit, "bench", "--weights", weights, "--batch", str(batch),
                                               "--threads", str(args.threads), "--iterations",
                                               str(args.iterations), "--json", "-"]))
                    for p in lowp:
                        lowp_runs[p].append(run_json([lemevit, "bench", "--weights", weights, "--batch", str(batch),
                                                      "--threads", str(args.threads), "--iterations",
                                                      str(args.iterations), "--precision", p, "--json", "-"]))
                    peaks.append(fma_peak(args.build, args.threads))
                    reads.append(read_bandwidth(args.build, args.threads))
                t_ms = statistics.median(torch_runs)
                ours_ms = statistics.median(r["ms_per_image"] for r in ours_runs)
                gflops = ours_runs[0]["gflop_per_image"] / (ours_ms * 1e-3)
                peak = statistics.median(peaks)
                all_peaks += peaks
                all_reads += reads
                row = dict(variant=name, batch=batch, threads=args.threads, torch_ms=t_ms,
                           lemevit_ms=ours_ms, speedup_vs_torch=t_ms / ours_ms, gflops=gflops,
                           fma_peak_gflops=peak, peak_fraction=gflops / peak, rel_error=err,
                           read_gbs=statistics.median(reads),
                           gflop_per_image=ours_runs[0]["gflop_per_image"],
                           rounds=dict(torch_ms=torch_runs, lemevit_ms=[r["ms_per_image"] for r in ours_runs],
                                       fma_peak_gflops=peaks, read_gbs=reads))
                line = "%-17s batch %d: PyTorch %8.2f ms/img" % (name, batch, t_ms)
                if node:
                    o_ms = statistics.median(ort_runs)
                    row.update(ort_ms=o_ms, speedup_vs_ort=o_ms / ours_ms, ort_rel_error=ort_err)
                    row["rounds"]["ort_ms"] = ort_runs
                    line += "  ORT %8.2f ms/img" % o_ms
                line += "  lemevit %8.2f ms/img" % ours_ms
                if node:
                    line += "  %5.2fx vs ORT" % row["speedup_vs_ort"]
                line += "  %5.2fx vs PyTorch  %5.1f GFLOP/s (%4.1f%% of %.0f peak, read %.0f GB/s)  rel err %.1e" % (
                    row["speedup_vs_torch"], gflops, 100 * row["peak_fraction"], peak, row["read_gbs"], err)
                if node:
                    line += " (ORT %.1e)" % ort_err
                for p in lowp:
                    p_ms = statistics.median(r["ms_per_image"] for r in lowp_runs[p])
                    row.update({p + "_ms": p_ms, p + "_speedup": ours_ms / p_ms, p + "_path": lowp_runs[p][0]["path"],
                                p + "_rel_error": lowp_err[p]})
                    row["rounds"][p + "_ms"] = [r["ms_per_image"] for r in lowp_runs[p]]
                    line += "\n%-17s batch %d: %s (%s) %8.2f ms/img  %5.2fx vs fp32  rel err %.1e" % (
                        "", batch, p, row[p + "_path"], p_ms, row[p + "_speedup"], lowp_err[p])
                    if p == "int8" and ort8_err is not None:
                        row["ort_int8_rel_error"] = ort8_err
                    if p == "int8" and ort8_runs:
                        o8 = statistics.median(ort8_runs)
                        row.update(ort_int8_ms=o8, int8_vs_ort_int8=o8 / p_ms)
                        row["rounds"]["ort_int8_ms"] = ort8_runs
                        line += "  (ORT int8 %8.2f ms/img, rel err %.1e%s: %5.2fx)" % (
                            o8, ort8_err, " *" if ort8_err > LOWP_BOUNDS["int8"] else "", o8 / p_ms)
                rows.append(row)
                print(line, flush=True)
    machine = "%s, %d thread(s), %s" % (platform.processor() or platform.machine(), args.threads,
                                         time.strftime("%Y-%m-%d"))
    try:
        cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
        machine = "%s (%d cores visible), %d thread(s), %s" % (cpu, os.cpu_count(), args.threads,
                                                              time.strftime("%Y-%m-%d"))
    except (OSError, IndexError):
        pass
    machine += ", OMP_WAIT_POLICY %s" % (WAIT_POLICY or "unset")
    peak, read = statistics.median(all_peaks), statistics.median(all_reads)
    json.dump({"machine": machine, "fma_peak_gflops": peak, "read_gbs": read, "torch": torch.__version__,
               "onnxruntime": ort_version if node else None, "rounds": args.rounds, "rows": rows},
              open(os.path.join(args.out, "compare.json"), "w"), indent=1)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write("Measured %s; PyTorch %s eager; %s; FMA peak %.1f GFLOP/s (register-only loop, median over the "
                "run; each row uses the peak measured in its own rounds); read bandwidth %.0f GB/s (8 MiB per "
                "thread, median over the run). Medians of %d interleaved rounds of "
                "%d passes.\n\n" % (machine, torch.__version__,
                                   "ONNX Runtime %s CPU" % ort_version if node else "no ONNX Runtime",
                                   peak, read, args.rounds, args.iterations))
        if node:
            f.write("| model | batch | PyTorch ms/img | ORT ms/img | lemevit ms/img | lemevit vs ORT "
                    "| vs PyTorch | GFLOP/s | % of FMA peak |\n|---|---|---|---|---|---|---|---|---|\n")
        else:
            f.write("| model | batch | PyTorch ms/img | lemevit ms/img | vs PyTorch | GFLOP/s | % of FMA peak |\n"
                    "|---|---|---|---|---|---|---|\n")
        for r in rows:
            ort_cells = "%.2f | " % r["ort_ms"] if node else ""
            vs_ort = "%.2fx | " % r["speedup_vs_ort"] if node else ""
            f.write("| %s | %d | %.2f | %s%.2f | %s%.2fx | %.1f | %.0f%% |\n" % (
                r["variant"], r["batch"], r["torch_ms"], ort_cells, r["lemevit_ms"], vs_ort,
                r["speedup_vs_torch"], r["gflops"], 100 * r["peak_fraction"]))
    if lowp:
        with open(os.path.join(args.out, "compare_precision.md"), "w") as f:
            f.write("Measured %s. Medians of %d interleaved rounds of %d passes; relative logit error against "
                    "PyTorch's float64 logits; read GB/s: each thread reading 8 MiB, in the same rounds.\n\n"
                    % (machine, args.rounds, args.iterations))
            ort8 = any("ort_int8_rel_error" in r for r in rows)
            if ort8:
                f.write("ORT int8: the exported graph's weight MatMuls quantised as ORT's quantize_dynamic does "
                        "(bench/ort_quantize.py: int8 weights per output channel, uint8 activations per tensor; "
                        "attention, convolutions and head fp32). * marks an ORT int8 whose logits are further "
                        "from PyTorch's than the int8 bound (%.0e): timed, but not the same answers.\n\n"
                        % LOWP_BOUNDS["int8"])
            f.write("| model | batch | %sfp32 ms/img |%s%s read GB/s |\n|---|---|%s---|%s%s---|\n" % (
                "ORT fp32 ms/img | " if node else "",
                "".join(" %s ms/img | %s vs fp32 | %s rel. error |" % (p, p, p) for p in lowp),
                " ORT int8 ms/img | ORT int8 rel. error | int8 vs ORT int8 |" if ort8 else "",
                "---|" if node else "", "---|---|---|" * len(lowp), "---|---|---|" if ort8 else ""))
            for r in rows:
                ort8_cells = ""
                if ort8:
                    ort8_cells = " %s | %s | %s |" % (
                        "%.2f" % r["ort_int8_ms"] if "ort_int8_ms" in r else "-",
                        "%.1e%s" % (r["ort_int8_rel_error"], " *" if r["ort_int8_rel_error"] > LOWP_BOUNDS["int8"]
                                    else "") if "ort_int8_rel_error" in r else "-",
                        "%.2fx" % r["int8_vs_ort_int8"] if "int8_vs_ort_int8" in r else "-")
                f.write("| %s | %d | %s%.2f |%s%s %.0f |\n" % (
                    r["variant"], r["batch"], "%.2f | " % r["ort_ms"] if node else "", r["lemevit_ms"],
                    "".join(" %.2f | %.2fx | %.1e |" % (r[p + "_ms"], r[p + "_speedup"], r[p + "_rel_error"])
                            for p in lowp), ort8_cells, r["read_gbs"]))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    else:
        labels = ["%s\nb%d" % (r["variant"].replace("lemevit_", ""), r["batch"]) for r in rows]
        pos = np.arange(len(rows))
        series = [("torch_ms", "PyTorch %s eager" % torch.__version__)]
        if node:
            series.append(("ort_ms", "ONNX Runtime %s" % ort_version))
        series.append(("lemevit_ms", "lemevit (C++), label: speed-up over %s" % ("ORT" if node else "PyTorch")))
        width = 0.8 / len(series)
        fig, ax = plt.subplots(figsize=(max(6, len(rows) * 1.1), 4))
        for i, (key, label) in enumerate(series):
            ax.bar(pos + (i - (len(series) - 1) / 2) * width, [r[key] for r in rows], width, label=label)
        ours = pos + (len(series) - 1) / 2 * width
        for p, r in zip(ours, rows):
            ax.text(p, r["lemevit_ms"], "%.2fx" % r["speedup_vs_ort" if node else "speedup_vs_torch"],
                    ha="center", va="bottom", fontsize=7)
        ax.set_xticks(pos)
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("ms per image (lower is better)")
        ax.set_title("224x224, fp32, %d thread(s): %s" % (args.threads, machine.split(" (")[0]), fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "compare.png"), dpi=110)
    print("wrote %s/compare.{json,md,png}" % args.out)


if __name__ == "__main__":
    main()
