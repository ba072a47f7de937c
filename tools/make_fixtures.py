#!/usr/bin/env python3
"""Write golden test cases for the C++ library.

    make_fixtures.py --out DIR [--only NAME ...] [--no-src] [--threads N] [--list]

Per case: a seeded random LeMeViT (tools/lemevit_ref.py, weights from
init_test_weights so that attention logits are O(1) and the D/D2 scale policy
matters) is saved in one of the checkpoint forms users have
(DIR/<case>.src.pth), converted by running tools/convert.py as a user would
(DIR/<case>.safetensors), and run in float64 on a seeded standard-normal
input (DIR/<case>.input.npy, float32 NCHW) to give DIR/<case>.logits.npy
(float32, (batch, classes)).  fp16/bf16 cases use the rounded weights, i.e.
the model the safetensors file really contains.  DIR/cases.json lists the
cases (merged with an existing one, so --only refreshes entries in place).
"""

import argparse
import copy
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

# Before torch is imported: idle OpenMP workers must sleep, not spin, or a
# 2-thread run crawls on a machine whose cores are busy with other work.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
import lemevit_ref as ref  # noqa: E402
from convert import read_safetensors  # noqa: E402

CONVERT = os.path.join(TOOLS, "convert.py")

CUSTOM_SMALL = dict(depths=(1, 1, 1, 1, 1), dims=(32, 32, 64, 96, 128),
                    kinds=("C", "D2", "D", "S", "S"), mlp_ratio=3, head_dim=16,
                    meta_tokens=8, in_chans=3)

# name, variant or custom arch, (H, W), batch, classes, dca scale, checkpoint form
CASES = [
    ("tiny_224", "lemevit_tiny", (224, 224), 2, 1000, "official", "timm_ema"),
    ("small_224", "lemevit_small", (224, 224), 1, 1000, "official", "model_dict"),
    ("base_224", "lemevit_base", (224, 224), 1, 1000, "official", "plain"),
    ("small_v2_224", "lemevit_small_v2", (224, 224), 1, 1000, "official", "seed_user_dp"),
    ("tiny_v2_224", "lemevit_tiny_v2", (224, 224), 1, 1000, "official", "plain_f16"),
    ("vit_tiny_224", "vit_tiny", (224, 224), 1, 1000, "official", "plain_bf16"),
    ("tiny_224_headdim", "lemevit_tiny", (224, 224), 1, 1000, "head_dim", "plain"),
    ("tiny_v2_224_headdim", "lemevit_tiny_v2", (224, 224), 1, 1000, "head_dim", "plain"),
    ("small_v2_160_c4", "lemevit_small_v2", (160, 160), 3, 4, "official", "whole_module"),
    ("custom_small", CUSTOM_SMALL, (96, 64), 2, 7, "official", "plain"),
    ("custom_small_headdim", CUSTOM_SMALL, (96, 64), 2, 7, "head_dim", "plain"),
]

# Cases that also get per-stage feature maps, DIR/<case>.stage<i>.npy.
FEATURE_CASES = ("custom_small", "tiny_224")

FORM_DOC = {
    "timm_ema": "timm {state_dict, state_dict_ema, epoch, arch, args}; converted with --ema",
    "model_dict": "{'model': state_dict}",
    "plain": "plain state_dict",
    "seed_user_dp": "seed user {epoch, state_dict, Best_ACC} with DataParallel 'module.' keys",
    "plain_f16": "plain state_dict, float16 tensors",
    "plain_bf16": "plain state_dict, bfloat16 tensors",
    "whole_module": "torch.save(model) of a class in a module that no longer exists",
}

# Minimal stand-in for the seed user's model module; it only has to exist
# while torch.save pickles the model, and is deleted before conversion.
_THROWAWAY_SRC = '''\
import lemevit_ref


class LeMeViTSeedUser(lemevit_ref.LeMeViT):
    """Stand-in for the seed user's models.lemevit class (deleted after saving)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.default_cfg = {"num_classes": kw.get("num_classes"), "crop_pct": 0.9}
'''


def case_arch(spec):
    return dict(ref.VARIANTS[spec]) if isinstance(spec, str) else dict(spec)


def _seed(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def _round_sd(sd, dtype):
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}


def _save_whole_module(model, arch, classes, path):
    """torch.save(model) where type(model) lives in a throwaway module."""
    tmp = tempfile.mkdtemp(prefix="seed_user_")
    modname = "seed_user_lemevit"
    try:
        with open(os.path.join(tmp, modname + ".py"), "w") as f:
            f.write(_THROWAWAY_SRC)
        sys.path.insert(0, tmp)
        mod = importlib.import_module(modname)
        m = mod.LeMeViTSeedUser(num_classes=classes, **arch)
        m.load_state_dict(model.state_dict())
        m.eval()
        torch.save(m, path)
    finally:
        sys.modules.pop(modname, None)
        if tmp in sys.path:
            sys.path.remove(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def save_source(form, model, ema_model, variant, arch, classes, path):
    """Save `model` (or the EMA one) in checkpoint form `form`; return the
    state dict the converted file must contain (before num_batches_tracked
    is dropped) and the extra convert.py arguments."""
    sd = model.state_dict()
    if form == "timm_ema":
        ema_sd = ema_model.state_dict()
        torch.save({"state_dict": sd, "state_dict_ema": ema_sd, "epoch": 299, "arch": variant,
                    "args": argparse.Namespace(model=variant, lr=1e-3, model_ema=True,
                                               model_ema_decay=0.9998),
                    "metric": 71.5}, path)
        return ema_sd, ["--ema"]
    if form == "model_dict":
        torch.save({"model": sd}, path)
    elif form == "plain":
        torch.save(sd, path)
    elif form == "seed_user_dp":
        torch.save({"epoch": 37, "state_dict": {"module." + k: v for k, v in sd.items()},
                    "Best_ACC": 93.75}, path)
    elif form in ("plain_f16", "plain_bf16"):
        sd = _round_sd(sd, torch.float16 if form == "plain_f16" else torch.bfloat16)
        torch.save(sd, path)
    elif form == "whole_module":
        _save_whole_module(model, arch, classes, path)
    else:
        raise ValueError("unknown form %r" % form)
    return sd, []


def run_convert(src, dst, args):
    cmd = [sys.executable, CONVERT, src, "-o", dst] + args
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("convert.py failed (%d): %s\n%s" % (p.returncode, " ".join(cmd),
                                                               p.stderr))
    return cmd[1:]


@torch.no_grad()
def make_case(out, name, spec, hw, batch, classes, scale, form, keep_src=True):
    t0 = time.time()
    arch = case_arch(spec)
    variant = spec if isinstance(spec, str) else "custom"
    seed = _seed(name)
    model = ref.init_test_weights(ref.LeMeViT(num_classes=classes, dca_scale=scale, **arch),
                                  seed).eval()
    ema_model = None
    if form == "timm_ema":  # EMA weights deliberately unrelated to the raw ones
        ema_model = ref.init_test_weights(
            ref.LeMeViT(num_classes=classes, dca_scale=scale, **arch), seed + 1).eval()

    src = os.path.join(out, name + ".src.pth")
    dst = os.path.join(out, name + ".safetensors")
    want_sd, extra = save_source(form, model, ema_model, variant, arch, classes, src)
    extra = list(extra)
    if scale != "official":
        extra += ["--dca-scale", scale]
    if arch["head_dim"] != 32:
        extra += ["--head-dim", str(arch["head_dim"])]
    cmd = run_convert(src, dst, extra)

    # The converted file must hold exactly the intended weights.
    got, meta = read_safetensors(dst)
    want = {k: v for k, v in want_sd.items() if not k.endswith("num_batches_tracked")}
    assert sorted(got) == sorted(want), (name, set(got) ^ set(want))
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), (name, k)
    assert meta["lemevit.variant"] == variant, (name, meta)
    assert meta["lemevit.dca_scale"] == scale and meta["lemevit.num_classes"] == str(classes)

    # Expected logits: float64 model holding exactly those (rounded) weights.
    m64 = copy.deepcopy(ema_model if ema_model is not None else model)
    m64.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in want_sd.items()})
    m64 = m64.double().eval()
    h, w = hw
    g = torch.Generator().manual_seed(seed ^ 0x5EED)
    x = torch.randn(batch, arch["in_chans"], h, w, generator=g, dtype=torch.float32)
    logits = m64(x.double())

    alt_rel = None
    if any(k in ("D", "D2") for k in arch["kinds"]):
        other = "head_dim" if scale == "official" else "official"
        alt = m64.set_dca_scale(other)(x.double())
        m64.set_dca_scale(scale)
        alt_rel = float((alt - logits).norm() / logits.norm())
        assert alt_rel > 1e-2, "%s: scale policies differ by only %.3g" % (name, alt_rel)

    if not keep_src:
        os.remove(src)
    np.save(os.path.join(out, name + ".input.npy"), np.ascontiguousarray(x.numpy(), "<f4"))
    np.save(os.path.join(out, name + ".logits.npy"),
            np.ascontiguousarray(logits.float().numpy(), "<f4"))
    # Backbone features (timm features_only style) for the small cases.
    if name in FEATURE_CASES:
        for i, f in enumerate(m64.forward_features(x.double())):
            np.save(os.path.join(out, "%s.stage%d.npy" % (name, i)),
                    np.ascontiguousarray(f.float().numpy(), "<f4"))
    dtypes = sorted({got[k].dtype for k in got})
    dtypes = [{torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[d]
              for d in dtypes]
    entry = {
        "name": name,
        "variant": variant,
        "arch": {"depths": list(arch["depths"]), "dims": list(arch["dims"]),
                 "kinds": list(arch["kinds"]), "mlp_ratio": arch["mlp_ratio"],
                 "head_dim": arch["head_dim"], "meta_tokens": arch["meta_tokens"],
                 "in_chans": arch["in_chans"], "num_classes": classes},
        "dca_scale": scale,
        "batch": batch, "height": h, "width": w,
        "input_shape": [batch, arch["in_chans"], h, w],
        "num_classes": classes,
        "logits_shape": [batch, classes],
        "form": form,
        "form_doc": FORM_DOC[form],
        "weights_dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "seed": seed,
        "files": {"source": name + ".src.pth" if keep_src else None, "weights": name + ".safetensors",
                  "input": name + ".input.npy", "logits": name + ".logits.npy"},
        "convert_cmd": ["tools/convert.py", os.path.basename(src), "-o",
                        os.path.basename(dst)] + cmd[4:],
        "max_abs_logit": float(logits.abs().max()),
        "logits_std": float(logits.std()),
        "other_scale_rel_diff": alt_rel,
    }
    print("%-22s %-16s %-13s %4.1fs  |logits|max %.3g  other-scale rel diff %s"
          % (name, variant, form, time.time() - t0, entry["max_abs_logit"],
             "-" if alt_rel is None else "%.3f" % alt_rel), file=sys.stderr)
    return entry


def main(argv=None):
    ap = argparse.ArgumentParser(prog="make_fixtures.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output directory (created if needed)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="generate only these cases")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch CPU threads (default 2; 1 is faster on a loaded machine)")
    ap.add_argument("--no-src", action="store_true",
                    help="delete each <case>.src.pth after converting it (saves ~half the disk)")
    args = ap.parse_args(argv)
    names = [c[0] for c in CASES]
    if args.list:
        for c in CASES:
            v = c[1] if isinstance(c[1], str) else "custom"
            print("%-22s %-16s %dx%d batch %d, %d classes, %s, %s"
                  % (c[0], v, c[2][0], c[2][1], c[3], c[4], c[5], c[6]))
        return 0
    if not args.out:
        ap.error("--out is required")
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        ap.error("unknown case(s) %s; see --list" % ", ".join(unknown))
    torch.set_num_threads(max(1, args.threads))
    os.makedirs(args.out, exist_ok=True)
    index_path = os.path.join(args.out, "cases.json")
    entries = {}
    if args.only and os.path.exists(index_path):
        with open(index_path) as f:
            entries = {e["name"]: e for e in json.load(f).get("cases", [])}
    t0 = time.time()
    for c in CASES:
        if args.only and c[0] not in args.only:
            continue
        entries[c[0]] = make_case(args.out, *c, keep_src=not args.no_src)
    ordered = [entries[n] for n in names if n in entries]
    with open(index_path, "w") as f:
        # Standard JSON, one case per line so that diffs and eyeballing stay easy.
        f.write('{"format_version": 1,\n "generator": "tools/make_fixtures.py",\n "cases": [\n')
        f.write(",\n".join("  " + json.dumps(e) for e in ordered))
        f.write("\n ]\n}\n")
    print("wrote %d case(s) to %s in %.1fs" % (len(ordered), args.out, time.time() - t0),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
