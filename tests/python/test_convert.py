"""Tests of tools/convert.py (run from the repo root:
/usr/bin/python3 -m unittest discover -s tests/python -t .)."""

import argparse
import collections
import contextlib
import importlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import torch

TOOLS = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                     "tools"))
sys.path.insert(0, TOOLS)
import convert  # noqa: E402
import lemevit_ref as ref  # noqa: E402

torch.set_num_threads(1)
CONVERT = os.path.join(TOOLS, "convert.py")

SMALL = dict(depths=(1, 2, 1, 1), dims=(32, 32, 64, 96), kinds=("C", "D2", "D", "S"),
             mlp_ratio=3, head_dim=16, meta_tokens=8, in_chans=3)
SMALL_CLASSES = 5


def small_sd(seed=0):
    m = ref.LeMeViT(num_classes=SMALL_CLASSES, **SMALL)
    return ref.init_test_weights(m, seed).state_dict()


def no_bookkeeping(sd):
    return {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def run_main(*argv):
    """convert.main in-process -> (exit code, stderr text)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = convert.main([str(a) for a in argv])
        except SystemExit as e:  # argparse errors
            rc = e.code
    return rc, err.getvalue()


class Evil:
    """Unpickling this with a normal unpickler would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch %s" % self.marker,))


class ConvertTestCase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lemevit_convert_test_")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def convert_ok(self, src, *args):
        dst = self.path(os.path.basename(src) + ".safetensors")
        rc, err = run_main(src, "-o", dst, *args)
        self.assertEqual(rc, 0, err)
        return convert.read_safetensors(dst) + (err,)

    def convert_err(self, src, *args):
        rc, err = run_main(src, "-o", self.path("out.safetensors"), *args)
        self.assertEqual(rc, 2, err)
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith("convert.py: error: "), err)
        self.assertFalse(os.path.exists(self.path("out.safetensors")))
        return lines[0]

    def assertSameTensors(self, got, want, dtype=None):
        want = no_bookkeeping(want)
        self.assertEqual(sorted(got), sorted(want))
        for k, v in want.items():
            v = v if dtype is None else v.to(dtype)
            self.assertEqual(got[k].dtype, v.dtype, k)
            self.assertTrue(torch.equal(got[k], v), k)


class TestForms(ConvertTestCase):
    @classmethod
    def setUpClass(cls):
        cls.sd = small_sd(0)
        cls.ema = small_sd(1)

    def roundtrip(self, obj, want, *args, form=None, **save_kw):
        src = self.path("ckpt.pth")
        torch.save(obj, src, **save_kw)
        got, meta, err = self.convert_ok(src, "--head-dim", "16", *args)
        self.assertSameTensors(got, want)
        if form:
            self.assertIn(form, meta["lemevit.source"])
        return meta

    def test_plain(self):
        meta = self.roundtrip(self.sd, self.sd, form="plain state_dict")
        self.assertEqual(meta["lemevit.source"], "ckpt.pth (plain state_dict)")

    def test_model_dict(self):
        self.roundtrip({"model": self.sd}, self.sd, form="{'model': state_dict}")

    def test_timm_default_takes_state_dict(self):
        ck = {"state_dict": self.sd, "state_dict_ema": self.ema, "epoch": 3,
              "arch": "custom", "args": argparse.Namespace(lr=0.1, model="x")}
        self.roundtrip(ck, self.sd, form="timm checkpoint['state_dict']")

    def test_timm_ema(self):
        ck = {"state_dict": self.sd, "state_dict_ema": self.ema, "epoch": 3,
              "arch": "custom", "args": argparse.Namespace(lr=0.1)}
        self.roundtrip(ck, self.ema, "--ema", form="timm checkpoint['state_dict_ema']")

    def test_ema_absent_is_an_error(self):
        src = self.path("a.pth")
        torch.save({"state_dict": self.sd, "epoch": 3, "arch": "x"}, src)
        msg = self.convert_err(src, "--ema", "--head-dim", "16")
        self.assertIn("state_dict_ema", msg)
        torch.save(self.sd, src)
        self.assertIn("state_dict_ema", self.convert_err(src, "--ema", "--head-dim", "16"))

    def test_seed_user_dict_with_dataparallel_prefix(self):
        ck = {"epoch": 9, "Best_ACC": 97.5,
              "state_dict": collections.OrderedDict(("module." + k, v) for k, v in self.sd.items()),
              "state_dict_ema": {"module." + k: v for k, v in self.ema.items()}}
        meta = self.roundtrip(ck, self.sd, form="seed training checkpoint['state_dict']")
        self.assertIn("'module.' prefix stripped", meta["lemevit.source"])
        self.roundtrip(ck, self.ema, "--ema", form="seed training checkpoint['state_dict_ema']")

    def test_half_and_bfloat16_kept(self):
        for dt in (torch.float16, torch.bfloat16):
            with self.subTest(dt):
                sd = {k: v.to(dt) if v.is_floating_point() else v for k, v in self.sd.items()}
                self.roundtrip(sd, sd)

    def test_dtype_option(self):
        src = self.path("p.pth")
        torch.save(self.sd, src)
        for name, dt in (("f16", torch.float16), ("bf16", torch.bfloat16), ("f32", torch.float32)):
            with self.subTest(name):
                got, _, err = self.convert_ok(src, "--head-dim", "16", "--dtype", name)
                self.assertSameTensors(got, self.sd, dt)
        sd64 = {k: v.double() if v.is_floating_point() else v for k, v in self.sd.items()}
        torch.save(sd64, src)
        got, _, _ = self.convert_ok(src, "--head-dim", "16")  # keep: f64 -> f32
        self.assertSameTensors(got, self.sd)

    def test_safetensors_input(self):
        src = self.path("in.safetensors")
        sd16 = {k: v.half() for k, v in no_bookkeeping(self.sd).items()}
        convert.write_safetensors(src, sd16, {"anything": "x"})
        got, meta, _ = self.convert_ok(src, "--head-dim", "16")
        self.assertSameTensors(got, sd16)
        self.assertEqual(meta["lemevit.source"], "in.safetensors (safetensors)")

    def test_legacy_torch_format(self):
        self.roundtrip(self.sd, self.sd, form="legacy torch format",
                       _use_new_zipfile_serialization=False)
        sd16 = {k: v.half() for k, v in self.sd.items()}
        self.roundtrip({"model": sd16}, sd16, _use_new_zipfile_serialization=False)

    def test_non_contiguous_and_shared_storage(self):
        sd = dict(self.sd)
        w = sd["head.weight"]
        big = torch.zeros(w.shape[1] + 3, w.shape[0])
        big[2:2 + w.shape[1]] = w.t()
        sd["head.weight"] = big[2:2 + w.shape[1]].t()  # strided view into a larger storage
        self.assertFalse(sd["head.weight"].is_contiguous())
        self.roundtrip(sd, self.sd)

    def _save_whole_module(self, wrap_dp=False):
        """torch.save(model) whose class lives in a module deleted afterwards."""
        moddir = self.path("usermod")
        os.mkdir(moddir)
        with open(os.path.join(moddir, "gone_user_model.py"), "w") as f:
            f.write("import lemevit_ref\n"
                    "class UserLeMeViT(lemevit_ref.LeMeViT):\n"
                    "    pass\n")
        sys.path.insert(0, moddir)
        try:
            mod = importlib.import_module("gone_user_model")
            m = mod.UserLeMeViT(num_classes=SMALL_CLASSES, **SMALL)
            m.load_state_dict(self.sd)
            m.register_buffer("scratch", torch.zeros(3), persistent=False)
            src = self.path("whole.pth")
            torch.save(torch.nn.DataParallel(m) if wrap_dp else m, src)
        finally:
            sys.modules.pop("gone_user_model", None)
            sys.path.remove(moddir)
            shutil.rmtree(moddir)
        return src

    def test_whole_pickled_module(self):
        src = self._save_whole_module()
        got, meta, _ = self.convert_ok(src, "--head-dim", "16")
        self.assertSameTensors(got, self.sd)
        self.assertIn("whole pickled module gone_user_model.UserLeMeViT", meta["lemevit.source"])

    def test_whole_pickled_dataparallel_module(self):
        src = self._save_whole_module(wrap_dp=True)
        got, meta, _ = self.convert_ok(src, "--head-dim", "16")
        self.assertSameTensors(got, self.sd)
        self.assertIn("'module.' prefix stripped", meta["lemevit.source"])

    def test_whole_module_class_really_unimportable(self):
        # The same file through torch's own loader fails: proves the test
        # exercises the unimportable-class path.
        src = self._save_whole_module()
        with self.assertRaises(Exception):
            torch.load(src, weights_only=True)
        with self.assertRaises(ModuleNotFoundError):
            torch.load(src)

    def test_never_calls_torch_load(self):
        src = self.path("p.pth")
        torch.save({"state_dict": self.sd, "arch": "a"}, src)
        boom = mock.Mock(side_effect=AssertionError("torch.load must not be used"))
        with mock.patch.object(torch, "load", boom), mock.patch.object(torch.jit, "load", boom):
            self.convert_ok(src, "--head-dim", "16")
        boom.assert_not_called()


class TestArchInference(ConvertTestCase):
    def test_all_official_variants(self):
        for name in ref.VARIANTS:
            sd = ref.build(name).state_dict()
            for classes in (1000, 4):
                with self.subTest(name=name, classes=classes):
                    if classes != 1000:
                        c = sd["head.weight"].shape[1]
                        sd = dict(sd, **{"head.weight": torch.zeros(classes, c),
                                         "head.bias": torch.zeros(classes)})
                    sd2 = convert.drop_bookkeeping(sd)
                    arch = convert.infer_arch(sd2)
                    v = ref.VARIANTS[name]
                    self.assertEqual(arch, dict(depths=list(v["depths"]), dims=list(v["dims"]),
                                                kinds=list(v["kinds"]), mlp_ratio=v["mlp_ratio"],
                                                head_dim=32, meta_tokens=16, in_chans=3,
                                                num_classes=classes))
                    convert.validate(sd2, arch)
                    self.assertEqual(convert.variant_name(arch), name)

    def test_metadata_written(self):
        src = self.path("tiny.pth")
        m = ref.build("lemevit_tiny", num_classes=4)
        torch.save({"model": m.state_dict()}, src)
        got, meta, err = self.convert_ok(src, "--dca-scale", "head_dim")
        self.assertEqual(meta, {
            "lemevit.format_version": "1", "lemevit.variant": "lemevit_tiny",
            "lemevit.depths": "1,2,2,8,2", "lemevit.dims": "64,64,128,192,320",
            "lemevit.kinds": "C,D,D,S,S", "lemevit.mlp_ratio": "4", "lemevit.head_dim": "32",
            "lemevit.meta_tokens": "16", "lemevit.in_chans": "3", "lemevit.num_classes": "4",
            "lemevit.dca_scale": "head_dim",
            "lemevit.source": "tiny.pth ({'model': state_dict})"})
        self.assertNotIn("downsample_layers.0.1.num_batches_tracked", got)
        self.assertIn("lemevit_tiny", err)

    def test_custom_arch_and_head_dim(self):
        src = self.path("c.pth")
        torch.save(small_sd(), src)
        got, meta, _ = self.convert_ok(src, "--head-dim", "16")
        self.assertEqual(meta["lemevit.variant"], "custom")
        self.assertEqual(meta["lemevit.kinds"], "C,D2,D,S")
        self.assertEqual(meta["lemevit.mlp_ratio"], "3")
        self.assertEqual(meta["lemevit.meta_tokens"], "8")
        self.assertEqual(meta["lemevit.head_dim"], "16")
        # dims 32,32,64,96 are not all multiples of 64
        self.assertIn("not multiples of head_dim 64", self.convert_err(src, "--head-dim", "64"))

    def test_safetensors_layout(self):
        dst = self.path("x.safetensors")
        t = {"b": torch.arange(3, dtype=torch.float16), "a": torch.ones(2, 2)}
        convert.write_safetensors(dst, t, {"k": "v"})
        raw = read_bytes(dst)
        n = int.from_bytes(raw[:8], "little")
        self.assertEqual((8 + n) % 8, 0)
        import json
        h = json.loads(raw[8:8 + n])
        self.assertEqual(h["__metadata__"], {"k": "v"})
        self.assertEqual(h["a"], {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]})
        self.assertEqual(h["b"], {"dtype": "F16", "shape": [3], "data_offsets": [16, 22]})
        self.assertEqual(len(raw), 8 + n + 22)
        back, meta = convert.read_safetensors(dst)
        self.assertTrue(torch.equal(back["a"], t["a"]) and torch.equal(back["b"], t["b"]))


class TestErrors(ConvertTestCase):
    @classmethod
    def setUpClass(cls):
        cls.sd = small_sd(0)

    def bad(self, sd, *args):
        src = self.path("bad.pth")
        torch.save(sd, src)
        return self.convert_err(src, "--head-dim", "16", *args)

    def test_missing_key(self):
        sd = dict(self.sd)
        del sd["stages.1.1.attn.kv2.weight"]
        msg = self.bad(sd)
        self.assertIn("missing stages.1.1.attn.kv2.weight (expected shape [64, 32])", msg)

    def test_extra_key(self):
        msg = self.bad(dict(self.sd, **{"stages.0.0.gamma1": torch.ones(1, 1, 32)}))
        self.assertIn("unexpected stages.0.0.gamma1 of shape [1, 1, 32]", msg)
        msg = self.bad(dict(self.sd, **{"downsample_layers.1.0.weight": torch.ones(32, 32, 3, 3)}))
        self.assertIn("downsample_layers.1.0.weight", msg)
        self.assertIn("Identity", msg)

    def test_wrong_shape(self):
        sd = dict(self.sd)
        sd["stages.2.0.attn.qkv1.weight"] = torch.zeros(192, 65)
        msg = self.bad(sd)
        self.assertIn("stages.2.0.attn.qkv1.weight has shape [192, 65], expected [192, 64]", msg)

    def test_inconsistent_architecture(self):
        sd = dict(self.sd)
        sd["stages.3.0.mlp.0.weight"] = torch.zeros(4 * 96, 96)
        sd["stages.3.0.mlp.0.bias"] = torch.zeros(4 * 96)
        self.assertIn("mlp_ratio differs", self.bad(sd))
        sd = dict(self.sd)
        sd["stages.1.0.mlp.0.weight"] = torch.zeros(70, 32)
        self.assertIn("not an integer multiple", self.bad(sd))
        sd = {k: v for k, v in self.sd.items() if "stages.1.1.attn" not in k}
        sd["stages.1.1.attn.qkv.weight"] = torch.zeros(96, 32)
        sd["stages.1.1.attn.qkv.bias"] = torch.zeros(96)
        sd["stages.1.1.attn.proj.weight"] = torch.zeros(32, 32)
        sd["stages.1.1.attn.proj.bias"] = torch.zeros(32)
        self.assertIn("mixes attention kinds", self.bad(sd))

    def test_values_the_library_would_refuse(self):
        sd = dict(self.sd)
        sd["stages.3.0.mlp.0.weight"] = self.sd["stages.3.0.mlp.0.weight"].clone()
        sd["stages.3.0.mlp.0.weight"][1, 2] = float("nan")
        w = sd["stages.3.0.mlp.0.weight"]
        msg = self.bad(sd)
        self.assertIn("values a model cannot run with", msg)
        self.assertIn("stages.3.0.mlp.0.weight contains NaN at flat index %d" % (w.shape[1] + 2), msg)
        sd = dict(self.sd, **{"head.bias": self.sd["head.bias"].clone()})
        sd["head.bias"][3] = float("-inf")
        self.assertIn("head.bias contains Inf at flat index 3", self.bad(sd))
        sd = dict(self.sd, **{"norm.running_var": self.sd["norm.running_var"].clone()})
        sd["norm.running_var"][4] = -0.25
        self.assertIn("norm.running_var is -0.25 at index 4: a variance cannot be negative", self.bad(sd))

    def test_dtype_overflow(self):
        sd = dict(self.sd, **{"head.weight": self.sd["head.weight"].clone()})
        sd["head.weight"][0, 0] = 1e5  # beyond f16's 65504
        msg = self.bad(sd, "--dtype", "f16")
        self.assertIn("head.weight overflows f16: its largest magnitude is 100000", msg)
        self.assertIn("choose --dtype f32 or bf16", msg)
        src = self.path("ok.pth")
        torch.save(sd, src)
        got, _, _ = self.convert_ok(src, "--head-dim", "16", "--dtype", "bf16")
        self.assertEqual(float(got["head.weight"][0, 0]), 99840.0)  # bf16's nearest

    def test_not_lemevit(self):
        self.assertIn("meta_tokens", self.bad({"conv.weight": torch.zeros(3, 3)}))

    def test_truncated_files(self):
        src = self.path("full.pth")
        torch.save(self.sd, src)
        raw = read_bytes(src)
        for cut in (len(raw) // 2, len(raw) - 30, 100):
            with self.subTest(cut=cut):
                with open(self.path("cut.pth"), "wb") as f:
                    f.write(raw[:cut])
                msg = self.convert_err(self.path("cut.pth"), "--head-dim", "16")
                self.assertRegex(msg, "truncated|corrupt|not a readable")
        st = self.path("full.safetensors")
        convert.write_safetensors(st, no_bookkeeping(self.sd))
        raw = read_bytes(st)
        with open(self.path("cut.safetensors"), "wb") as f:
            f.write(raw[:-100])
        self.assertIn("truncated", self.convert_err(self.path("cut.safetensors"), "--head-dim", "16"))
        open(self.path("empty.pth"), "wb").close()
        self.assertIn("empty", self.convert_err(self.path("empty.pth")))

    def test_non_checkpoint_pickles(self):
        with open(self.path("list.pkl"), "wb") as f:
            pickle.dump([1, 2, 3], f)
        self.assertIn("holds a list", self.convert_err(self.path("list.pkl")))
        torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, self.path("opt.pth"))
        msg = self.convert_err(self.path("opt.pth"))
        self.assertIn("no LeMeViT state dict found", msg)
        self.assertIn("epoch", msg)
        with open(self.path("text.txt"), "w") as f:
            f.write("hello world, not a checkpoint\n" * 10)
        self.assertIn("not a readable checkpoint", self.convert_err(self.path("text.txt")))

    def test_missing_input_and_bad_flags(self):
        self.assertIn("cannot read", self.convert_err(self.path("nope.pth")))
        rc, err = run_main(self.path("x"), "-o", self.path("y"), "--dca-scale", "weird")
        self.assertEqual(rc, 2)
        self.assertIn("convert.py: error:", err)

    def test_cli_exit_code_in_subprocess(self):
        sd = dict(self.sd)
        del sd["head.bias"]
        src = self.path("bad.pth")
        torch.save(sd, src)
        p = subprocess.run([sys.executable, CONVERT, src, "-o", self.path("o.safetensors"),
                            "--head-dim", "16"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stdout, "")
        self.assertRegex(p.stderr, r"^convert.py: error: .*missing head.bias \(expected shape "
                                   r"\[5\]\)\n$")


class TestFixtureGenerator(ConvertTestCase):
    def test_cheap_case_end_to_end(self):
        # make_fixtures runs convert.py as a subprocess and cross-checks it.
        p = subprocess.run([sys.executable, os.path.join(TOOLS, "make_fixtures.py"), "--out",
                            self.dir, "--only", "custom_small", "--no-src", "--threads", "1"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        import json
        import numpy as np
        with open(self.path("cases.json")) as f:
            (case,) = json.load(f)["cases"]
        self.assertEqual(case["input_shape"], [2, 3, 96, 64])
        self.assertEqual(case["logits_shape"], [2, 7])
        self.assertEqual(case["weights_dtype"], "F32")
        self.assertFalse(os.path.exists(self.path("custom_small.src.pth")))
        x = np.load(self.path(case["files"]["input"]))
        y = np.load(self.path(case["files"]["logits"]))
        self.assertEqual((x.dtype.str, x.shape, y.dtype.str, y.shape),
                         ("<f4", (2, 3, 96, 64), "<f4", (2, 7)))
        t, meta = convert.read_safetensors(self.path(case["files"]["weights"]))
        a = case["arch"]
        m = ref.LeMeViT(depths=a["depths"], dims=a["dims"], kinds=a["kinds"],
                        mlp_ratio=a["mlp_ratio"], head_dim=a["head_dim"],
                        meta_tokens=a["meta_tokens"], num_classes=a["num_classes"],
                        dca_scale=meta["lemevit.dca_scale"]).eval()
        missing, unexpected = m.load_state_dict(t, strict=False)
        self.assertEqual(unexpected, [])
        self.assertTrue(all(k.endswith("num_batches_tracked") for k in missing))
        with torch.no_grad():
            got = m(torch.from_numpy(x)).numpy()
        self.assertLess(np.abs(got - y).max(), 1e-4 * np.abs(y).max())


class TestMaliciousPickles(ConvertTestCase):
    def setUp(self):
        super().setUp()
        self.marker = self.path("PWNED_marker")

    def tearDown(self):
        self.assertFalse(os.path.exists(self.marker), "pickle payload was executed")

    def test_payload_is_real(self):
        # Sanity: an ordinary unpickler does run the payload (in a child process).
        other = self.path("control_marker")
        with open(self.path("evil.pkl"), "wb") as f:
            pickle.dump(Evil(other), f)
        subprocess.run([sys.executable, "-c",
                        "import pickle,sys; pickle.load(open(sys.argv[1],'rb'))",
                        self.path("evil.pkl")], check=True)
        self.assertTrue(os.path.exists(other))

    def test_payload_next_to_weights_is_inert(self):
        src = self.path("evil.pth")
        sd = small_sd(0)
        torch.save({"state_dict": sd, "arch": "x", "evil": Evil(self.marker),
                    "args": [Evil(self.marker)]}, src)
        got, meta, _ = self.convert_ok(src, "--head-dim", "16")
        self.assertSameTensors(got, sd)

    def test_payload_alone_is_refused(self):
        with open(self.path("evil.pkl"), "wb") as f:
            pickle.dump(Evil(self.marker), f)
        self.assertIn("posix.system", self.convert_err(self.path("evil.pkl")))
        torch.save(Evil(self.marker), self.path("evil.pth"))
        self.convert_err(self.path("evil.pth"))
        torch.save({"model": Evil(self.marker)}, self.path("evil2.pth"))
        self.convert_err(self.path("evil2.pth"))

    def test_payload_in_place_of_a_tensor(self):
        sd = dict(small_sd(0))
        sd["head.bias"] = Evil(self.marker)
        torch.save(sd, self.path("evil.pth"))
        self.convert_err(self.path("evil.pth"), "--head-dim", "16")
        torch.save({"model": sd}, self.path("evil2.pth"))
        self.convert_err(self.path("evil2.pth"), "--head-dim", "16")

    def test_unknown_globals_become_records(self):
        u = convert._RestrictedUnpickler(io.BytesIO(b""), None)
        for mod, name in (("os", "system"), ("builtins", "eval"), ("builtins", "getattr"),
                          ("subprocess", "Popen"), ("torch", "load"), ("__builtin__", "exec")):
            cls = u.find_class(mod, name)
            self.assertTrue(issubclass(cls, convert.Record), (mod, name))
            self.assertIsInstance(cls("rm -rf /"), convert.Record)


if __name__ == "__main__":
    unittest.main()
