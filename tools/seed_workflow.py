#!/usr/bin/env python3
"""The seed article's workflow, small: a small_v2-shaped LeMeViT with a 4-class
head, an ImageFolder test set, and the seed user's PyTorch evaluation.

    seed_workflow.py --out DIR [--per-class N]
        DIR/seed.pth.tar      seeded random weights (tools/lemevit_ref.py) whose
                              head is a linear probe fitted on training images
                              (so predictions differ and are sometimes wrong),
                              saved as the seed user's {epoch, state_dict,
                              Best_ACC} checkpoint with DataParallel 'module.' keys
        DIR/seed.safetensors  the same, converted by tools/convert.py
                              (--dca-scale head_dim, the seed code's scale)
        DIR/data/<class>/     N Fashion-MNIST test images of each of 4 classes
                              (28x28 grayscale PNG)
    seed_workflow.py --out DIR --evaluate
        prints the seed user's evaluation of DIR/data in PyTorch as JSON.

torch_evaluate() is that evaluation as the seed user wrote it (ImageFolder,
Resize((224, 224)), ToTensor, Normalize(0.5, 0.5), DataLoader, argmax) with
the metrics computed in NumPy (scikit-learn's macro averages, zero_division=0).
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lemevit_ref  # noqa: E402
from train_fashion_mnist import CLASS_NAMES, DATA_DIR, load_split  # noqa: E402

# Folder name -> Fashion-MNIST class; sorted folder order is the head's order.
FOLDERS = {"coat": 4, "dress": 3, "sandal": 5, "trouser": 1}
SEED = 1234


def seed_transform(images):
    """uint8 (N, 28, 28) -> the seed user's (N, 3, 224, 224) input (PIL bilinear, Normalize(0.5))."""
    x = np.stack([np.asarray(Image.fromarray(i, mode="L").convert("RGB").resize((224, 224), Image.BILINEAR))
                  for i in images])
    return (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5


@torch.no_grad()
def fit_head(model, images, labels, ridge=1e-2):
    """Least-squares linear probe: the head maps the model's pooled features to one-hot labels."""
    inputs = []
    hook = model.head.register_forward_hook(lambda m, i, o: inputs.append(i[0]))
    for s in range(0, len(images), 32):
        model(seed_transform(images[s:s + 32]))
    hook.remove()
    f = torch.cat(inputs).double()
    f = torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], 1)
    y = torch.nn.functional.one_hot(torch.as_tensor(labels), len(FOLDERS)).double()
    w = torch.linalg.solve(f.T @ f + ridge * torch.eye(f.shape[1], dtype=f.dtype), f.T @ y)
    model.head.weight.copy_(w[:-1].T)
    model.head.bias.copy_(w[-1])


def make(out, per_class=8, data_dir=DATA_DIR, train_per_class=32):
    """Writes the checkpoint, its conversion and the ImageFolder under `out`."""
    os.makedirs(out, exist_ok=True)
    model = lemevit_ref.init_test_weights(
        lemevit_ref.build("lemevit_small_v2", num_classes=len(FOLDERS), dca_scale="head_dim"), SEED).eval()
    train_images, train_labels = load_split("train", data_dir)
    chosen = [(i, k) for k, c in enumerate(FOLDERS.values())
              for i in np.nonzero(train_labels == c)[0][:train_per_class]]
    fit_head(model, train_images[[i for i, _ in chosen]], [k for _, k in chosen])
    checkpoint = os.path.join(out, "seed.pth.tar")
    torch.save({"epoch": 50, "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
                "Best_ACC": 91.0}, checkpoint)
    subprocess.run([sys.executable, os.path.join(HERE, "convert.py"), checkpoint, "-o",
                    os.path.join(out, "seed.safetensors"), "--dca-scale", "head_dim"],
                   check=True, capture_output=True)
    images, labels = load_split("t10k", data_dir)
    for folder, c in FOLDERS.items():
        os.makedirs(os.path.join(out, "data", folder), exist_ok=True)
        for i in np.nonzero(labels == c)[0][:per_class]:
            Image.fromarray(images[i], mode="L").save(os.path.join(out, "data", folder, "%05d.png" % i))


def load_checkpoint(path):
    """The seed user's model: their class, their checkpoint, eval mode."""
    ckpt = torch.load(path, map_location="cpu")
    model = lemevit_ref.build("lemevit_small_v2", num_classes=len(FOLDERS), dca_scale="head_dim")
    model.load_state_dict({k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()})
    return model.eval()


def metrics(labels, predicted, k):
    """Accuracy, macro precision/recall/F1 (0 where undefined) and the confusion matrix."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted_c, support = confusion.sum(0), confusion.sum(1)
    precision = np.divide(tp, predicted_c, out=np.zeros(k), where=predicted_c > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    return {"accuracy": float((labels == predicted).mean()), "macro_precision": float(precision.mean()),
            "macro_recall": float(recall.mean()), "macro_f1": float(f1.mean()), "confusion": confusion.tolist()}


@torch.no_grad()
def torch_evaluate(data_dir, model, batch=32):
    """The seed user's evaluation loop; returns metrics() plus 'logits' (N x k)
    and 'samples' (ImageFolder's (path, label) list)."""
    from torchvision import datasets, transforms
    transform = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                    transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])
    dataset = datasets.ImageFolder(data_dir, transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False)
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x))
        labels += y.tolist()
    logits = torch.cat(logits).numpy()
    result = metrics(labels, logits.argmax(1), len(dataset.classes))
    result.update(logits=logits, samples=dataset.samples)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(prog="seed_workflow.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-class", type=int, default=8)
    ap.add_argument("--evaluate", action="store_true")
    a = ap.parse_args(argv)
    if a.evaluate:
        r = torch_evaluate(os.path.join(a.out, "data"), load_checkpoint(os.path.join(a.out, "seed.pth.tar")))
        print(json.dumps({k: v for k, v in r.items() if k not in ("logits", "samples")}))
    else:
        make(a.out, a.per_class)
        print("%s: seed.pth.tar, seed.safetensors, data/ (%d classes: %s)"
              % (a.out, len(FOLDERS), ", ".join(CLASS_NAMES[c] for c in FOLDERS.values())))


if __name__ == "__main__":
    main()
