#!/usr/bin/env python3
"""Fashion-MNIST test set as an ImageFolder tree, PyTorch predictions over it,
and the bundled sample images.

    export_imagefolder.py --out DIR [--limit N]
        Write DIR/<class index, 2 digits>_<class name sanitized>/<index>.png
        (e.g. DIR/09_ankle_boot/00000.png; <index> is the 5-digit position in
        the t10k file).  Sorted sub-folder names equal the class order, so
        torchvision ImageFolder (and the C++ `evaluate` command) assign the
        true Fashion-MNIST class indices.  PNGs are 28x28 grayscale ("L") as
        PIL saves them.  --limit N exports only the first N test images.

    export_imagefolder.py --predictions FILE.json --out DIR
                          [--model models/fashion_mnist/lemevit_fmnist.safetensors]
        Run the bundled model in PyTorch (tools/lemevit_ref.py, eval mode)
        over every PNG under DIR, read back through PIL with the model's
        preprocessing (convert("RGB"), resize only if the size differs,
        ToTensor, Normalize(mean, std) from the file's lemevit.preprocess),
        and write {"<class dir>/<file>.png": predicted index, ...} (relative
        paths with "/", sorted).  If DIR does not exist yet it is exported
        first (honouring --limit).  Prints the accuracy against the folder
        labels.  This is the PyTorch side of the C++-vs-PyTorch agreement
        check.

    export_imagefolder.py --samples DIR
        Write the bundled sample images: the first test image of each of 8
        different classes as NN_<class name>.png plus labels.txt
        (filename<TAB>class index<TAB>class name).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from convert import read_safetensors  # noqa: E402
from lemevit_ref import LeMeViT  # noqa: E402
from train_fashion_mnist import CLASS_NAMES, DATA_DIR, load_split  # noqa: E402

DEFAULT_MODEL = os.path.join(os.path.dirname(HERE), "models", "fashion_mnist",
                             "lemevit_fmnist.safetensors")
# Classes of the bundled samples, in file order (8 different classes).
SAMPLE_CLASSES = [9, 2, 1, 6, 4, 5, 7, 3]


def sanitize(name):
    """'T-shirt/top' -> 't_shirt_top', 'Ankle boot' -> 'ankle_boot'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def class_dir(idx):
    return "%02d_%s" % (idx, sanitize(CLASS_NAMES[idx]))


def export(out, limit=0, data_dir=DATA_DIR):
    images, labels = load_split("t10k", data_dir)
    n = len(images) if not limit else min(limit, len(images))
    for c in range(len(CLASS_NAMES)):
        os.makedirs(os.path.join(out, class_dir(c)), exist_ok=True)
    for i in range(n):
        Image.fromarray(images[i], mode="L").save(
            os.path.join(out, class_dir(int(labels[i])), "%05d.png" % i))
    return n


def list_images(root):
    """Sorted (relative path with '/', class index) like torchvision
    ImageFolder: class = position of the sub-folder in sorted order."""
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    items = []
    for ci, d in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(os.path.join(root, d))):
            for f in sorted(files):
                if f.lower().endswith(".png"):
                    rel = os.path.relpath(os.path.join(dirpath, f), root)
                    items.append((rel.replace(os.sep, "/"), ci))
    items.sort()
    return classes, items


def load_model(path):
    sd, meta = read_safetensors(path)
    arch = dict(depths=[int(v) for v in meta["lemevit.depths"].split(",")],
                dims=[int(v) for v in meta["lemevit.dims"].split(",")],
                kinds=meta["lemevit.kinds"].split(","),
                mlp_ratio=int(meta["lemevit.mlp_ratio"]),
                head_dim=int(meta["lemevit.head_dim"]),
                meta_tokens=int(meta["lemevit.meta_tokens"]),
                in_chans=int(meta["lemevit.in_chans"]),
                num_classes=int(meta["lemevit.num_classes"]),
                dca_scale=meta["lemevit.dca_scale"])
    model = LeMeViT(**arch)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()},
                                                strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit("%s: missing %s, unexpected %s" % (path, missing, unexpected))
    model.eval()
    return model, meta


def preprocess(path, prep):
    """PIL -> normalised (3, H, W) float tensor, as torchvision's
    Resize(size) (bilinear, antialias) + ToTensor + Normalize would do; the
    resize is skipped when the image already has the target size (it is the
    identity there)."""
    img = Image.open(path).convert("RGB")
    h, w = prep["resize"]
    if img.size != (w, h):
        interp = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                  "nearest": Image.NEAREST}[prep.get("interp", "bilinear")]
        img = img.resize((w, h), interp)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    x = x.float().div(255.0)
    mean = torch.tensor(prep["mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(prep["std"], dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def predict(root, model_path, out_json, batch=500):
    model, meta = load_model(model_path)
    prep = json.loads(meta["lemevit.preprocess"])
    classes, items = list_images(root)
    preds = {}
    correct = 0
    for s in range(0, len(items), batch):
        chunk = items[s:s + batch]
        x = torch.stack([preprocess(os.path.join(root, rel), prep) for rel, _ in chunk])
        p = model(x).argmax(dim=1).tolist()
        for (rel, label), pi in zip(chunk, p):
            preds[rel] = int(pi)
            correct += int(pi == label)
    with open(out_json, "w") as f:
        json.dump(preds, f, indent=0, sort_keys=True)
        f.write("\n")
    acc = correct / max(1, len(items))
    print("%d images in %d classes, PyTorch accuracy %.4f (%d/%d) -> %s"
          % (len(items), len(classes), acc, correct, len(items), out_json))
    return preds, acc


def write_samples(out, data_dir=DATA_DIR):
    images, labels = load_split("t10k", data_dir)
    os.makedirs(out, exist_ok=True)
    lines = []
    for n, c in enumerate(SAMPLE_CLASSES):
        i = int(np.nonzero(labels == c)[0][0])
        name = "%02d_%s.png" % (n, sanitize(CLASS_NAMES[c]))
        Image.fromarray(images[i], mode="L").save(os.path.join(out, name))
        lines.append("%s\t%d\t%s" % (name, c, CLASS_NAMES[c]))
        print("%s: t10k index %d, class %d (%s)" % (name, i, c, CLASS_NAMES[c]))
    with open(os.path.join(out, "labels.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="ImageFolder root to write (or read with --predictions)")
    ap.add_argument("--limit", type=int, default=0, help="export only the first N test images")
    ap.add_argument("--predictions", metavar="FILE.json",
                    help="write PyTorch predictions of the model over --out's PNGs")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="safetensors model (default: bundled)")
    ap.add_argument("--samples", metavar="DIR", help="write the bundled sample images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=DATA_DIR)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.samples:
        write_samples(args.samples, args.data_dir)
        if not args.out:
            return 0
    if not args.out:
        ap.error("--out DIR is required")
    if args.predictions:
        if not os.path.isdir(args.out):
            n = export(args.out, args.limit, args.data_dir)
            print("exported %d test images to %s" % (n, args.out))
        predict(args.out, args.model, args.predictions)
    else:
        n = export(args.out, args.limit, args.data_dir)
        print("exported %d test images to %s" % (n, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
