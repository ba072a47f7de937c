#!/usr/bin/env python3
"""The seed article's evaluation from Python: the lemevit module against the
same evaluation in PyTorch, side by side in one process.

    PYTHONPATH=build/python /usr/bin/python3 bench/python_evaluate.py
        [--per-class 50] [--threads 2] [--rounds 3] [--work /tmp/lemevit-python-evaluate]

tools/seed_workflow.py writes a small_v2-shaped model with a 4-class head
(as the seed user's checkpoint and converted) and an ImageFolder of
4 x per-class Fashion-MNIST test images. Then, in --rounds interleaved rounds
(a shared machine's speed drifts), the seed user's loop (torchvision
ImageFolder + Resize((224, 224)) + Normalize(0.5), DataLoader batch 32,
torch.no_grad, NumPy metrics) and `m.evaluate(dir, preset="seed")` each
evaluate the whole folder, from image files to metrics; both with --threads
threads and libgomp's default wait policy. Prints the medians as the
README's table; the two must agree on every prediction.
"""

import argparse
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
import seed_workflow  # noqa: E402

import lemevit  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/lemevit-python-evaluate")
    a = ap.parse_args()
    work = os.path.join(a.work, "per-class-%d" % a.per_class)
    if not os.path.exists(os.path.join(work, "seed.safetensors")):
        seed_workflow.make(work, per_class=a.per_class)
    data = os.path.join(work, "data")
    torch.set_num_threads(a.threads)
    reference = seed_workflow.load_checkpoint(os.path.join(work, "seed.pth.tar"))
    m = lemevit.load(os.path.join(work, "seed.safetensors"), threads=a.threads)

    times = {"pytorch": [], "lemevit": []}
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        want = seed_workflow.torch_evaluate(data, reference)
        times["pytorch"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = m.evaluate(data, preset="seed")
        times["lemevit"].append(time.perf_counter() - t0)
        if [p["predicted"] for p in got["predictions"]] != want["logits"].argmax(1).tolist():
            raise SystemExit("lemevit and PyTorch disagree on a prediction")
    n = got["images"]
    t_torch, t_ours = statistics.median(times["pytorch"]), statistics.median(times["lemevit"])
    print("%d images (224x224 after resizing), %d threads, median of %d interleaved rounds; accuracy %.4f, "
          "macro F1 %.4f in both" % (n, a.threads, a.rounds, got["accuracy"], got["macro_f1"]))
    print()
    print("| evaluation | seconds | images/s | speed-up |")
    print("|---|---|---|---|")
    print("| PyTorch %s (seed user's loop) | %.2f | %.1f | 1.00x |" % (torch.__version__, t_torch, n / t_torch))
    print("| lemevit `m.evaluate` | %.2f | %.1f | %.2fx |" % (t_ours, n / t_ours, t_torch / t_ours))


if __name__ == "__main__":
    main()
