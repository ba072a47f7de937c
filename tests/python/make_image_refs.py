#!/usr/bin/env python3
"""Reference outputs of PIL/torchvision for the C++ image tests (image_test).

Usage: make_image_refs.py --out DIR

Writes into DIR:
  * test files: the committed photos (tests/images) plus files derived from
    them in every pixel layout the loader handles (gray, gray+alpha, RGBA,
    palette with and without transparency, 16-bit, BMP, progressive and
    grayscale JPEG) and broken files (truncated, not an image, forged huge
    headers);
  * decode_*.npy: what PIL gives for Image.open(f).convert("RGB");
  * resize_*.npy, crop_*.npy: PIL resize / torchvision CenterCrop /
    Resize(int) outputs, computed from the PIL-decoded pixels so the C++ side
    can test resampling apart from decoding;
  * pipe_*.npy: full torchvision pipelines (Resize, CenterCrop, ToTensor,
    Normalize) for the three presets of lemevit/image/preprocess.hpp;
  * cases.json: the manifest image_test reads.
All arrays are float32 (uint8 images stored exactly), HWC for images, CHW for
tensors.
"""
import argparse
import io
import json
import math
import os
import shutil
import struct
import zlib

import numpy as np
from PIL import Image
import torch
from torchvision import transforms as T

HERE = os.path.dirname(os.path.abspath(__file__))
PHOTOS = os.path.join(HERE, "..", "images")

PIL_INTERP = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
TV_INTERP = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
             "nearest": T.InterpolationMode.NEAREST}


def png_bytes(width, height, bit_depth, color_type, rows):
    """A minimal PNG from raw filtered-free rows (for layouts PIL cannot write
    and for forged headers)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def save_npy(out, name, arr):
    np.save(os.path.join(out, name), np.ascontiguousarray(arr, dtype=np.float32))
    return name


def make_files(out):
    """Writes the test files; returns {file name: exact decode expected}."""
    files = {}
    for name in sorted(os.listdir(PHOTOS)):
        if name.lower().endswith((".jpg", ".png")):
            shutil.copy(os.path.join(PHOTOS, name), os.path.join(out, name))
            files[name] = not name.lower().endswith(".jpg")
    hopper = Image.open(os.path.join(PHOTOS, "grace_hopper.jpg")).convert("RGB")
    camera = Image.open(os.path.join(PHOTOS, "camera.png")).convert("L")
    rng = np.random.default_rng(1234)

    small = hopper.resize((160, 188), Image.BILINEAR)
    w, h = small.size
    alpha = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))

    def save(name, img, exact=True, **kw):
        img.save(os.path.join(out, name), **kw)
        files[name] = exact

    save("noise.png", Image.fromarray(rng.integers(0, 256, (23, 37, 3), dtype=np.uint8)))
    save("gray.png", camera.resize((120, 90), Image.BILINEAR))
    la = Image.merge("LA", [small.convert("L"), alpha])
    save("gray_alpha.png", la)
    save("rgba.png", Image.merge("RGBA", [*small.split(), alpha]))
    save("palette.png", small.quantize(64))
    pal = small.quantize(16)
    save("palette_trns.png", pal, transparency=3)
    save("rgb24.bmp", small, format="BMP")
    save("palette8.bmp", small.quantize(100), format="BMP")
    save("gray8.bmp", small.convert("L"), format="BMP")
    save("progressive.jpg", small, exact=False, quality=90, progressive=True)
    save("gray.jpg", camera.resize((128, 96), Image.BILINEAR), exact=False, quality=90)
    save("subsample422.jpg", small, exact=False, quality=85, subsampling=1)

    save("gray.pgm", camera.resize((50, 40), Image.BILINEAR))
    save("rgb.ppm", small.resize((50, 40), Image.BILINEAR))
    save("rgb.tga", small)
    save("opaque.gif", small.quantize(200))  # no transparency: stb and PIL agree

    g16 = np.array([[0, 1, 200, 255, 256, 1000, 40000, 65535]] * 3, dtype=">u2")
    with open(os.path.join(out, "gray16.png"), "wb") as f:
        f.write(png_bytes(8, 3, 16, 0, [r.tobytes() for r in g16]))
    files["gray16.png"] = True
    c16 = rng.integers(0, 65536, (5, 7, 3)).astype(">u2")
    with open(os.path.join(out, "rgb16.png"), "wb") as f:
        f.write(png_bytes(7, 5, 16, 2, [r.tobytes() for r in c16]))
    files["rgb16.png"] = True
    a16 = rng.integers(0, 65536, (5, 7, 4)).astype(">u2")
    with open(os.path.join(out, "rgba16.png"), "wb") as f:
        f.write(png_bytes(7, 5, 16, 6, [r.tobytes() for r in a16]))
    files["rgba16.png"] = True
    return files


def make_broken(out):
    """Files the loader must refuse, with a word its message must contain."""
    broken = {}
    with open(os.path.join(PHOTOS, "grace_hopper.jpg"), "rb") as f:
        jpg = f.read()
    with open(os.path.join(out, "truncated.jpg"), "wb") as f:
        f.write(jpg[: len(jpg) * 6 // 10])
    broken["truncated.jpg"] = "truncated"
    with open(os.path.join(out, "noeoi.jpg"), "wb") as f:
        f.write(jpg[:-2])  # all the scan data, only the end marker missing
    broken["noeoi.jpg"] = "truncated"
    with open(os.path.join(out, "rgb24.bmp"), "rb") as f:
        bmp = f.read()
    with open(os.path.join(out, "truncated.bmp"), "wb") as f:
        f.write(bmp[: len(bmp) // 2])
    broken["truncated.bmp"] = "truncated"
    with open(os.path.join(out, "noise.png"), "rb") as f:
        png = f.read()
    with open(os.path.join(out, "truncated.png"), "wb") as f:
        f.write(png[: len(png) // 2])
    broken["truncated.png"] = "truncated PNG"
    with open(os.path.join(out, "text.png"), "w") as f:
        f.write("This is a text file with an image's name.\n")
    broken["text.png"] = "cannot decode"
    open(os.path.join(out, "empty.jpg"), "wb").close()
    broken["empty.jpg"] = "empty"
    with open(os.path.join(out, "maxval1023.pgm"), "wb") as f:
        f.write(b"P5\n2 1\n1023\n" + bytes(4))
    broken["maxval1023.pgm"] = "maxval 1023"
    with open(os.path.join(out, "gray16.pgm"), "wb") as f:
        f.write(b"P5\n2 1\n65535\n" + bytes(4))
    broken["gray16.pgm"] = "maxval 65535"

    # Forged headers declaring 60000 x 60000: refused from the header alone.
    with open(os.path.join(out, "bomb.png"), "wb") as f:
        f.write(png_bytes(60000, 60000, 8, 2, [b"\x00" * 30]))
    broken["bomb.png"] = "60000x60000"
    sof = struct.pack(">BHHB", 8, 60000, 60000, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    with open(os.path.join(out, "bomb.jpg"), "wb") as f:
        f.write(b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9")
    broken["bomb.jpg"] = "60000x60000"
    hdr = struct.pack("<IiiHHIIiiII", 40, 60000, 60000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    with open(os.path.join(out, "bomb.bmp"), "wb") as f:
        f.write(b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + hdr + b"\x00" * 16)
    broken["bomb.bmp"] = "60000x60000"
    return broken


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)

    files = make_files(out)
    broken = make_broken(out)
    decoded = {}
    decode_cases = []
    for name, exact in sorted(files.items()):
        img = Image.open(os.path.join(out, name)).convert("RGB")
        decoded[name] = img
        ref = save_npy(out, "decode_" + name.replace(".", "_") + ".npy", np.asarray(img))
        decode_cases.append({"file": name, "ref": ref, "exact": exact})

    # Resampling from PIL-decoded pixels: (source, width, height, interp).
    resize_specs = [
        ("grace_hopper.jpg", 224, 224), ("rocket.jpg", 224, 224), ("grace_hopper.jpg", 301, 97),
        ("camera.png", 28, 28), ("noise.png", 224, 224), ("noise.png", 50, 10),
        ("noise.png", 37, 60), ("grace_hopper.jpg", 512, 700), ("rocket.jpg", 641, 100),
        ("gray.png", 119, 91),
    ]
    resize_cases = []
    for i, (src, w, h) in enumerate(resize_specs):
        for interp in ("bilinear", "bicubic", "nearest"):
            if interp == "nearest" and i % 2:
                continue
            res = decoded[src].resize((w, h), PIL_INTERP[interp])
            ref = save_npy(out, "resize_%d_%s.npy" % (i, interp), np.asarray(res))
            resize_cases.append({"src": src, "width": w, "height": h, "interp": interp, "ref": ref})

    # torchvision Resize(int) then CenterCrop(int).
    crop_specs = [
        ("grace_hopper.jpg", 256, 224, "bicubic"), ("rocket.jpg", 248, 224, "bicubic"),
        ("rocket.jpg", 229, 224, "bilinear"), ("camera.png", 256, 224, "bicubic"),
        ("noise.png", 23, 40, "bilinear"), ("noise.png", 30, 33, "bicubic"),
        ("grace_hopper.jpg", 227, 224, "bilinear"), ("rocket.jpg", 120, 96, "nearest"),
        ("camera.png", 37, 50, "nearest"),
    ]
    crop_cases = []
    for i, (src, short, crop, interp) in enumerate(crop_specs):
        resized = T.Resize(short, interpolation=TV_INTERP[interp])(decoded[src])
        cropped = T.CenterCrop(crop)(resized)
        ref_r = save_npy(out, "short_%d.npy" % i, np.asarray(resized))
        ref_c = save_npy(out, "crop_%d.npy" % i, np.asarray(cropped))
        crop_cases.append({"src": src, "short": short, "crop": crop, "interp": interp,
                           "ref_resized": ref_r, "ref": ref_c})

    # Full pipelines, as the presets describe them.
    presets = {
        "seed_user": T.Compose([T.Resize((224, 224)), T.ToTensor(),
                                T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]),
        "timm_eval": T.Compose([T.Resize(math.floor(224 / 0.875), interpolation=T.InterpolationMode.BICUBIC),
                                T.CenterCrop(224), T.ToTensor(),
                                T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]),
        "timm_legacy": T.Compose([T.Resize(math.floor(224 / 0.9), interpolation=T.InterpolationMode.BICUBIC),
                                  T.CenterCrop(224), T.ToTensor(),
                                  T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]),
    }
    pipe_cases = []
    for src in ("grace_hopper.jpg", "rocket.jpg", "camera.png", "rgba.png"):
        for preset, tf in presets.items():
            x = tf(decoded[src]).numpy()
            ref = save_npy(out, "pipe_%s_%s.npy" % (src.replace(".", "_"), preset), x)
            pipe_cases.append({"file": src, "preset": preset, "ref": ref, "exact_decode": files[src]})

    # A metadata-style JSON pipeline with a non-square exact resize: [H, W].
    meta = {"resize": [40, 64], "interp": "bicubic", "mean": [0.25, 0.5, 0.75], "std": [0.2, 0.3, 0.4]}
    tf = T.Compose([T.Resize((40, 64), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                    T.Normalize(meta["mean"], meta["std"])])
    ref = save_npy(out, "pipe_json.npy", tf(decoded["rocket.jpg"]).numpy())
    json_case = {"file": "rocket.jpg", "json": json.dumps(meta), "ref": ref, "height": 40, "width": 64}

    manifest = {"decode": decode_cases, "resize": resize_cases, "crop": crop_cases,
                "pipeline": pipe_cases, "json_pipeline": json_case, "broken": broken}
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
