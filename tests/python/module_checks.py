"""The Python module `lemevit` against PyTorch and against the `lemevit` tool
(run by `meson test` with PYTHONPATH=build/python).

Environment: LEMEVIT_BIN (the tool), LEMEVIT_FIXTURES (golden cases from
tools/make_fixtures.py), LEMEVIT_WORK (a scratch folder).
"""

import json
import os
import subprocess
import sys
import threading
import time
import unittest

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import export_imagefolder  # noqa: E402
import seed_workflow  # noqa: E402

BIN = os.environ.get("LEMEVIT_BIN", "")
FIXTURES = os.environ.get("LEMEVIT_FIXTURES", "")
WORK = os.environ.get("LEMEVIT_WORK", "/tmp/lemevit-module-checks")
BUNDLED = os.path.join(ROOT, "models", "fashion_mnist", "lemevit_fmnist.safetensors")
SAMPLES = os.path.join(ROOT, "models", "fashion_mnist", "samples")

try:
    import lemevit
except ImportError:
    lemevit = None


def run_cli(*args):
    p = subprocess.run([BIN, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError("lemevit %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
    return p.stdout


def sample_paths():
    return sorted(os.path.join(SAMPLES, f) for f in os.listdir(SAMPLES) if f.endswith(".png"))


def sample_labels():
    with open(os.path.join(SAMPLES, "labels.txt")) as f:
        return {os.path.join(SAMPLES, line.split("\t")[0]): int(line.split("\t")[1]) for line in f if line.strip()}


def fixture(name):
    return os.path.join(FIXTURES, name)


def relative_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


class Module(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if lemevit is None or not BIN or not FIXTURES:
            raise unittest.SkipTest("run through `meson test` (PYTHONPATH=build/python, LEMEVIT_BIN, LEMEVIT_FIXTURES)")
        os.makedirs(WORK, exist_ok=True)
        cls.tiny = lemevit.load(fixture("tiny_224.safetensors"))
        cls.x = np.load(fixture("tiny_224.input.npy"))
        cls.bundled = lemevit.load(BUNDLED)

    def test_logits_match_pytorch(self):
        want = np.load(fixture("tiny_224.logits.npy"))
        got = self.tiny(self.x)
        self.assertEqual(got.dtype, np.float32)
        self.assertEqual(got.shape, want.shape)
        self.assertLess(relative_error(got, want), 1e-4)

    def test_every_compiled_in_variant_matches_pytorch(self):
        for case in ("small_v2_224", "tiny_v2_224_headdim", "vit_tiny_224"):
            m = lemevit.load(fixture(case + ".safetensors"))
            want = np.load(fixture(case + ".logits.npy"))
            self.assertLess(relative_error(m(np.load(fixture(case + ".input.npy"))), want), 1e-4, case)

    def test_bf16_and_int8_within_the_precision_tests_bounds(self):
        want = np.load(fixture("tiny_224.logits.npy"))
        for precision, bound in (("bf16", 2e-2), ("int8", 8e-2)):
            m = lemevit.load(fixture("tiny_224.safetensors"), precision=precision)
            self.assertEqual(m.info["precision"], precision)
            self.assertLess(relative_error(m(self.x), want), bound, precision)

    def test_any_array_like_gives_the_same_logits(self):
        want = self.tiny(self.x)
        # A torch tensor (through __array__), a non-contiguous view, a slice.
        np.testing.assert_array_equal(self.tiny(torch.from_numpy(self.x)), want)
        self.assertFalse(np.asfortranarray(self.x).flags.c_contiguous)
        np.testing.assert_array_equal(self.tiny(np.asfortranarray(self.x)), want)
        wide = np.zeros((2, 3, 224, 448), np.float32)
        wide[..., ::2] = self.x
        np.testing.assert_array_equal(self.tiny(wide[..., ::2]), want)
        np.testing.assert_array_equal(self.tiny(self.x[1:]), want[1:])
        self.assertEqual(self.tiny(self.x[:0]).shape, (0, 1000))

    def test_a_batch_longer_than_one_pass_gives_each_image_its_own_logits(self):
        x = np.concatenate([self.x] * 3)
        got = self.tiny(x)
        for i in range(len(x)):
            np.testing.assert_array_equal(got[i], self.tiny(x[i:i + 1])[0])

    def test_features_match_pytorch(self):
        got = self.tiny.features(self.x)
        self.assertEqual(len(got), 5)
        for i, g in enumerate(got):
            want = np.load(fixture("tiny_224.stage%d.npy" % i))
            self.assertEqual(g.shape, want.shape)
            self.assertLess(relative_error(g, want), 1e-4, "stage %d" % i)
        only = self.tiny.features(self.x, stages=[3, 1])
        np.testing.assert_array_equal(only[0], got[3])
        np.testing.assert_array_equal(only[1], got[1])

    def test_features_equal_the_tools(self):
        paths = sample_paths()[:3]
        out = os.path.join(WORK, "features")
        run_cli("features", *paths, "-o", out)
        prep = self.bundled.info["preprocess"]
        x = torch.stack([export_imagefolder.preprocess(
            p, {"resize": prep["resize"][::-1], "interp": prep["interp"], "mean": prep["mean"],
                "std": prep["std"]}) for p in paths]).numpy()
        for i, g in enumerate(self.bundled.features(x)):
            np.testing.assert_allclose(g, np.load(os.path.join(out, "stage%d.npy" % i)), rtol=0, atol=1e-5)

    def test_classify_equals_the_tool_and_pytorch(self):
        paths = sample_paths()
        got = self.bundled.classify(paths, top_k=3)
        tool = json.loads(run_cli("classify", "--top-k", "3", "--json", "-", *paths).split("\n", len(paths))[-1])
        self.assertEqual([r["path"] for r in got], paths)
        for g, t in zip(got, tool["results"]):
            self.assertEqual([c["class"] for c in g["top"]], [c["class"] for c in t["top"]])
            self.assertEqual([c["name"] for c in g["top"]], [c["name"] for c in t["top"]])
            for a, b in zip(g["top"], t["top"]):
                self.assertAlmostEqual(a["probability"], b["probability"], delta=1e-5)
        # PyTorch on the same files (the reference model, PIL preprocessing).
        model, meta = export_imagefolder.load_model(BUNDLED)
        prep = json.loads(meta["lemevit.preprocess"])
        with torch.no_grad():
            p = torch.softmax(model(torch.stack([export_imagefolder.preprocess(q, prep) for q in paths])), 1)
        labels = sample_labels()
        for path, g, row in zip(paths, got, p.numpy()):
            self.assertEqual(g["top"][0]["class"], labels[path], path)
            self.assertEqual(g["top"][0]["name"], self.bundled.classes[labels[path]])
            for c in g["top"]:
                self.assertAlmostEqual(c["probability"], float(row[c["class"]]), delta=1e-4)

    def test_classify_preprocessing_options_are_the_tools_flags(self):
        path = sample_paths()[0]
        got = self.bundled.classify([path], top_k=10, preset="timm", interp="bilinear", mean=(0.4, 0.5, 0.6))
        tool = json.loads(run_cli("classify", "--top-k", "10", "--preset", "timm", "--interp", "bilinear",
                                  "--mean", "0.4,0.5,0.6", "--json", "-", path).split("\n", 1)[1])
        for a, b in zip(got[0]["top"], tool["results"][0]["top"]):
            self.assertEqual(a["class"], b["class"])
            self.assertAlmostEqual(a["probability"], b["probability"], delta=1e-5)
        default = self.bundled.classify([path], top_k=10)[0]["top"]
        self.assertNotEqual([c["probability"] for c in default], [c["probability"] for c in got[0]["top"]])

    def test_info_and_classes(self):
        info = self.tiny.info
        self.assertEqual(info["architecture"], "lemevit_tiny")
        self.assertEqual(info["input_shape"], (3, 224, 224))
        self.assertEqual(info["num_classes"], 1000)
        self.assertEqual(self.bundled.classes[9], "Ankle boot")
        meta = json.loads(export_imagefolder.load_model(BUNDLED)[1]["lemevit.preprocess"])
        self.assertEqual(list(self.bundled.info["preprocess"]["resize"]), meta["resize"][::-1])
        self.assertEqual(list(self.bundled.info["preprocess"]["mean"]), float32s(meta["mean"]))

    def test_errors_are_lemevit_errors_with_the_librarys_message(self):
        with self.assertRaisesRegex(lemevit.Error, "no-such.safetensors"):
            lemevit.load(os.path.join(WORK, "no-such.safetensors"))
        with self.assertRaisesRegex(lemevit.Error, "precision must be fp32, bf16 or int8, got 'fp16'"):
            lemevit.load(BUNDLED, precision="fp16")
        with self.assertRaisesRegex(lemevit.Error, "threads must be at least 1"):
            lemevit.load(BUNDLED, threads=0)
        with self.assertRaisesRegex(lemevit.Error, r"expected input of shape \(N, 3, 224, 224\), got \(2, 3, 224\)"):
            self.tiny(self.x[..., 0])
        with self.assertRaisesRegex(lemevit.Error, "expected float32 values, got float64"):
            self.tiny(self.x.astype(np.float64))
        with self.assertRaisesRegex(lemevit.Error, "stage 5 does not exist: this model has stages 0..4"):
            self.tiny.features(self.x, stages=[5])
        with self.assertRaisesRegex(lemevit.Error, "not-there.png"):
            self.bundled.classify([sample_paths()[0], os.path.join(WORK, "not-there.png")])
        with self.assertRaisesRegex(lemevit.Error, "preset must be seed, timm or timm-legacy, got 'imagenet'"):
            self.bundled.classify(sample_paths(), preset="imagenet")
        with self.assertRaisesRegex(lemevit.Error, "crop must be positive"):
            self.bundled.classify(sample_paths(), crop=0)
        # A model of an architecture that is not compiled in: the loader's list.
        with self.assertRaisesRegex(lemevit.Error, "does not compile in"):
            lemevit.load(fixture("custom_small.safetensors"))
        self.assertTrue(issubclass(lemevit.Error, RuntimeError))

    def test_threads_share_one_model_with_the_gil_released(self):
        x = np.concatenate([self.x] * 4)
        want = [self.tiny(x[i:i + 1]) for i in range(len(x))]
        got = [None] * len(x)
        span = {}

        def work(i):
            got[i] = self.tiny(x[i:i + 1])

        def long_call():
            span["start"] = time.monotonic()
            self.tiny(np.concatenate([x] * 4))
            span["end"] = time.monotonic()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(x))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        # While one thread is inside a call, this one keeps running Python.
        ticks = []
        t = threading.Thread(target=long_call)
        t.start()
        while t.is_alive():
            ticks.append(time.monotonic())
            time.sleep(0.001)
        t.join()
        inside = [s for s in ticks if span["start"] + 0.05 < s < span["end"] - 0.05]
        self.assertGreater(span["end"] - span["start"], 0.2)
        self.assertGreater(len(inside), 10)

    def test_threads_argument_gives_the_same_logits(self):
        one = lemevit.load(fixture("tiny_224.safetensors"), threads=1)
        np.testing.assert_array_equal(one(self.x), self.tiny(self.x))


class SeedWorkflow(unittest.TestCase):
    """The seed article's evaluation: a small_v2-shaped model with a 4-class
    head on an ImageFolder, against the seed user's PyTorch loop with the
    metrics computed in NumPy, and against `lemevit evaluate`."""

    @classmethod
    def setUpClass(cls):
        if lemevit is None or not BIN:
            raise unittest.SkipTest("run through `meson test` (PYTHONPATH=build/python, LEMEVIT_BIN)")
        cls.dir = os.path.join(WORK, "seed")
        cls.weights = os.path.join(cls.dir, "seed.safetensors")
        cls.data = os.path.join(cls.dir, "data")
        if not os.path.exists(cls.weights):
            seed_workflow.make(cls.dir, per_class=8)
        cls.torch = seed_workflow.torch_evaluate(
            cls.data, seed_workflow.load_checkpoint(os.path.join(cls.dir, "seed.pth.tar")))
        cls.model = lemevit.load(cls.weights)

    def test_evaluate_matches_pytorch_and_numpy_metrics(self):
        logits = self.torch["logits"]
        # The premise: no near-tie that float rounding could flip.
        top2 = np.sort(logits, 1)[:, -2:]
        self.assertGreater(float((top2[:, 1] - top2[:, 0]).min()), 1e-3 * float(np.abs(logits).max()))
        got = self.model.evaluate(self.data, preset="seed")
        want_paths = [os.path.relpath(p, self.data) for p, _ in self.torch["samples"]]
        self.assertEqual([p["path"] for p in got["predictions"]], want_paths)
        self.assertEqual([p["label"] for p in got["predictions"]], [c for _, c in self.torch["samples"]])
        self.assertEqual([p["predicted"] for p in got["predictions"]], logits.argmax(1).tolist())
        for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
            self.assertAlmostEqual(got[key], self.torch[key], places=6, msg=key)
        self.assertEqual(got["confusion"], self.torch["confusion"])
        # A test that could fail: mistakes are made, and not all in one class.
        self.assertTrue(0.5 < got["accuracy"] < 1.0, got["accuracy"])
        self.assertGreater(len({p["predicted"] for p in got["predictions"]}), 2)

    def test_evaluate_equals_the_tool(self):
        got = self.model.evaluate(self.data, batch=5, preset="seed")
        tool = json.loads(run_cli("evaluate", "--weights", self.weights, "--data", self.data, "--preset", "seed",
                                  "--json", "-"))
        self.assertEqual(got, tool)

    @staticmethod
    def broken_folder():
        """20 Fashion-MNIST test images and one file that is not an image."""
        data = os.path.join(WORK, "broken-folder")
        if not os.path.isdir(data):
            export_imagefolder.export(data, limit=20)
            with open(os.path.join(data, "03_dress", "broken.png"), "wb") as f:
                f.write(b"not an image")
        return data

    def test_evaluate_compare_equals_the_tool(self):
        data = self.broken_folder()
        int8 = lemevit.load(BUNDLED, precision="int8")
        got = int8.evaluate(data, compare="fp32")
        tool = json.loads(run_cli("evaluate", "--data", data, "--precision", "int8", "--compare", "fp32",
                                  "--json", "-"))
        self.assertEqual(got, tool)
        self.assertEqual((got["precision"], got["compare"]["precision"], got["compare"]["images"]),
                         ("int8", "fp32", 20))
        self.assertTrue(all(0 < p["logit_error"] < 8e-2 for p in got["predictions"]))
        with self.assertRaisesRegex(lemevit.Error, "compare='int8' is the precision being evaluated"):
            int8.evaluate(data, compare="int8")
        with self.assertRaisesRegex(lemevit.Error, "compare must be fp32, bf16 or int8, got 'fp16'"):
            int8.evaluate(data, compare="fp16")

    def test_unreadable_images_strict_and_bad_options(self):
        data = self.broken_folder()
        bundled = lemevit.load(BUNDLED)
        got = bundled.evaluate(data)
        self.assertEqual(got["unreadable"], ["03_dress/broken.png"])
        self.assertEqual(got["images"], 20)
        tool = json.loads(run_cli("evaluate", "--data", data, "--json", "-"))
        self.assertEqual(got, tool)
        with self.assertRaisesRegex(lemevit.Error, "broken.png"):
            bundled.evaluate(data, strict=True)
        with self.assertRaisesRegex(lemevit.Error, "class_map must be auto, names or sorted, got 'alphabetical'"):
            bundled.evaluate(data, class_map="alphabetical")
        with self.assertRaisesRegex(lemevit.Error, "not a directory"):
            bundled.evaluate(os.path.join(WORK, "no-such-folder"))


def float32s(values):
    return [float(np.float32(v)) for v in values]


if __name__ == "__main__":
    unittest.main()
