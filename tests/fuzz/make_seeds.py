#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (committed; rerun only to refresh):

    /usr/bin/python3 tests/fuzz/make_seeds.py [--fixtures build/tests/fixtures]

tests/fuzz/corpus/safetensors: complete files of the fuzz model type
  (tests/fuzz/targets.hpp: depths 1,1,1,1, dims 8,8,8,8, kinds C,D2,D,S,
  mlp_ratio 1, head_dim 8, 1 meta token, 16x16 input, 3 classes) written by
  tools/convert.py's writer in f32/f16/bf16 and int8 (`--dtype int8`: int8
  weights with their scales), with and without metadata, with
  preprocessing and class-name metadata, and with another class count, plus
  the head of custom_small.safetensors.
tests/fuzz/corpus/npy: small float32 arrays in .npy 1.0/2.0/3.0 and a few
  refused layouts, plus the golden custom_small.logits.npy.
tests/fuzz/corpus/image: the bundled Fashion-MNIST samples and 32x32 cuts
  of tests/images in every format and mode the decoder reads.
Each seed is a few KB at most.
"""

import argparse
import io
import json
import os
import struct
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import convert  # noqa: E402
import lemevit_ref as ref  # noqa: E402

FUZZ_ARCH = dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), kinds=("C", "D2", "D", "S"),
                 mlp_ratio=1, head_dim=8, meta_tokens=1, in_chans=3)


def out_dir(name):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    return d


def write(d, name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


@torch.no_grad()
def safetensors_seeds(fixtures):
    d = out_dir("safetensors")
    for classes, seed in ((3, 1), (5, 2)):
        model = ref.init_test_weights(ref.LeMeViT(num_classes=classes, **FUZZ_ARCH), seed).eval()
        sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
        arch = dict(FUZZ_ARCH, num_classes=classes)
        meta = convert.make_metadata(arch, "official", "fuzz seed")
        forms = [("f16", torch.float16, meta)] if classes == 5 else [
            ("f32", torch.float32, meta), ("f16", torch.float16, meta),
            ("bf16", torch.bfloat16, dict(meta, **{"lemevit.dca_scale": "head_dim"})),
            ("f16_nometa", torch.float16, None),
            ("f16_preprocess", torch.float16, dict(meta, **{
                "lemevit.preprocess": json.dumps({"resize_short": 32, "crop": 28, "interp": "bicubic",
                                                  "mean": [0.485, 0.456, 0.406],
                                                  "std": [0.229, 0.224, 0.225]}),
                "lemevit.class_names": json.dumps(["a", "b", "c"])}))]
        for tag, dtype, m in forms:
            path = os.path.join(d, "fuzz_c%d_%s.safetensors" % (classes, tag))
            convert.write_safetensors(path, {k: v.to(dtype) for k, v in sd.items()}, m)
        if classes == 3:  # an int8 file, as `convert.py --dtype int8` writes it
            convert.write_safetensors(os.path.join(d, "fuzz_c3_int8.safetensors"),
                                      convert.convert_tensors(sd, "int8"), meta)
    # The golden custom configuration: its header and the start of its data
    # (the loader reaches the binding of its names and stops at the end).
    src = os.path.join(fixtures, "custom_small.safetensors")
    if os.path.exists(src):
        raw = open(src, "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        write(d, "custom_small_head.safetensors", raw[:8 + n + 256])
    else:
        print("make_seeds: %s missing, custom_small seed kept as is" % src, file=sys.stderr)
    write(d, "empty_header.safetensors", struct.pack("<Q", 2) + b"{}")


def npy_bytes(arr, version=None):
    b = io.BytesIO()
    if version is None:
        np.save(b, arr)
    else:
        np.lib.format.write_array(b, arr, version=version)
    return b.getvalue()


def npy_seeds(fixtures):
    d = out_dir("npy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    write(d, "input_1x3x16x16.npy", npy_bytes(x))
    write(d, "v2.npy", npy_bytes(x[:, :, :4, :4], (2, 0)))
    write(d, "v3.npy", npy_bytes(x[:, :1, :2, :2], (3, 0)))
    write(d, "scalar.npy", npy_bytes(np.float32(1.5)))
    write(d, "empty.npy", npy_bytes(np.zeros((0, 3), np.float32)))
    write(d, "fortran.npy", npy_bytes(np.asfortranarray(x[0, :, :3, :3])))
    write(d, "f64.npy", npy_bytes(x[0, 0, :2].astype(np.float64)))
    write(d, "bigendian.npy", npy_bytes(x[0, 0, :2].astype(">f4")))
    src = os.path.join(fixtures, "custom_small.logits.npy")
    if os.path.exists(src):
        write(d, "custom_small.logits.npy", open(src, "rb").read())


def image_seeds():
    d = out_dir("image")
    samples = os.path.join(ROOT, "models", "fashion_mnist", "samples")
    for f in sorted(os.listdir(samples)):
        if f.endswith(".png"):
            write(d, "fmnist_" + f, open(os.path.join(samples, f), "rb").read())
    photo = Image.open(os.path.join(ROOT, "tests", "images", "grace_hopper.jpg")).convert("RGB")
    photo = photo.resize((32, 24), Image.BILINEAR)
    gray = Image.open(os.path.join(ROOT, "tests", "images", "camera.png")).convert("L").resize((24, 32))

    def save(name, img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        write(d, name, b.getvalue())

    save("baseline_420.jpg", photo, "JPEG", quality=80, subsampling=2)
    save("baseline_422.jpg", photo, "JPEG", quality=80, subsampling=1)
    save("baseline_444.jpg", photo, "JPEG", quality=90, subsampling=0)
    save("progressive.jpg", photo, "JPEG", quality=75, progressive=True)
    save("restart.jpg", photo, "JPEG", quality=75)  # PIL has no restart option; kept as a plain one
    save("gray.jpg", gray, "JPEG", quality=85)
    save("cmyk.jpg", photo.convert("CMYK"), "JPEG", quality=85)
    save("rgb.png", photo, "PNG")
    save("gray.png", gray, "PNG")
    save("gray16.png", gray.convert("I").point(lambda v: v * 300), "PNG")
    save("palette.png", photo.convert("P", palette=Image.ADAPTIVE, colors=16), "PNG")
    save("rgba.png", photo.convert("RGBA"), "PNG")
    save("la.png", gray.convert("LA"), "PNG")
    save("bw.png", gray.convert("1"), "PNG")
    save("rgb24.bmp", photo, "BMP")
    save("palette8.bmp", photo.convert("P", palette=Image.ADAPTIVE, colors=16), "BMP")
    save("gray.bmp", gray, "BMP")
    save("photo.gif", photo.convert("P", palette=Image.ADAPTIVE, colors=32), "GIF")
    save("photo.ppm", photo, "PPM")
    save("gray.pgm", gray, "PPM")
    save("photo.tga", photo, "TGA")
    save("photo_rle.tga", photo, "TGA", compression="tga_rle")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fixtures", default=os.path.join(ROOT, "build", "tests", "fixtures"))
    a = p.parse_args()
    safetensors_seeds(a.fixtures)
    npy_seeds(a.fixtures)
    image_seeds()


if __name__ == "__main__":
    main()
