"""Error reports of the `lemevit` tool (run by `meson test` as `cli_errors`).

Every bad flag, flag value, weights file, input array and image must end the
tool with a non-zero exit status (never a signal or a sanitizer report) and
an `error: ...` line naming the flag, file or tensor at fault.

Environment: LEMEVIT_BIN (the tool), LEMEVIT_FIXTURES (golden cases),
LEMEVIT_WORK (a scratch folder). Needs numpy (Debian's /usr/bin/python3).
"""

import os
import shutil
import struct
import subprocess
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LEMEVIT_BIN", "")
FIXTURES = os.environ.get("LEMEVIT_FIXTURES", "")
WORK = os.path.join(os.environ.get("LEMEVIT_WORK", "/tmp/lemevit-cli-checks"), "errors")
BUNDLED = os.path.join(ROOT, "models", "fashion_mnist", "lemevit_fmnist.safetensors")
SAMPLE = os.path.join(ROOT, "models", "fashion_mnist", "samples", "00_ankle_boot.png")


def work(name):
    return os.path.join(WORK, name)


def put(path, data):
    with open(path, "wb") as f:
        f.write(data)


def get(path):
    with open(path, "rb") as f:
        return f.read()


class CliErrors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not BIN or not os.path.exists(BIN):
            raise unittest.SkipTest("LEMEVIT_BIN is not set: run through `meson test`")
        shutil.rmtree(WORK, ignore_errors=True)
        os.makedirs(WORK)
        # Inputs for `infer` on the bundled model (N x 3 x 28 x 28 float32).
        rng = np.random.default_rng(0)
        np.save(work("good.npy"), rng.standard_normal((2, 3, 28, 28)).astype(np.float32))
        np.save(work("shape.npy"), rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
        np.save(work("rank3.npy"), rng.standard_normal((3, 28, 28)).astype(np.float32))
        np.save(work("f64.npy"), rng.standard_normal((2, 3, 28, 28)))
        np.save(work("int.npy"), np.zeros((2, 3, 28, 28), np.int32))
        good = get(work("good.npy"))
        put(work("truncated.npy"), good[:len(good) // 2])
        put(work("text.npy"), b"1.0 2.0 3.0\n")
        # Weights: truncated, without metadata, an architecture not compiled in.
        weights = get(BUNDLED)
        put(work("truncated.safetensors"), weights[:len(weights) * 2 // 3])
        n = struct.unpack("<Q", weights[:8])[0]
        put(work("garbage.safetensors"), struct.pack("<Q", 12) + b"not json at" + b"\0")
        put(work("huge_header.safetensors"), struct.pack("<Q", 200 << 20) + weights[8:8 + n])
        # Images: not an image, truncated, a 60000 x 60000 decompression bomb.
        put(work("text.png"), b"hello, not an image\n")
        png = get(SAMPLE)
        put(work("truncated.png"), png[:len(png) // 2])
        put(work("bomb.png"), 
            b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 60000, 60000)
            + b"\x08\x02\x00\x00\x00" + struct.pack(">I", 0))
        os.makedirs(work("empty_folder"), exist_ok=True)

    def run_tool(self, *args):
        return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=300)

    def check_error(self, args, *messages, code=1):
        p = self.run_tool(*args)
        what = "lemevit " + " ".join(map(str, args))
        self.assertGreater(p.returncode, 0, "%s: exit status %d\n%s" % (what, p.returncode, p.stderr))
        if code is not None:
            self.assertEqual(p.returncode, code, "%s\n%s" % (what, p.stderr))
        self.assertNotIn("Sanitizer", p.stderr, what)
        self.assertNotIn("terminate called", p.stderr, what)
        for m in messages:
            self.assertIn(m, p.stderr, what)
        return p

    # --- commands and flags -------------------------------------------------

    def test_commands(self):
        p = self.run_tool()
        self.assertEqual(p.returncode, 2)
        self.assertIn("usage: lemevit", p.stdout)
        self.check_error(["frobnicate"], "unknown command 'frobnicate'", code=2)
        self.check_error(["--weights", BUNDLED], "unknown command '--weights'", code=2)

    def test_flag_syntax(self):
        cases = [
            (["infer", "--wieghts", BUNDLED], "lemevit infer: unknown flag --wieghts"),
            (["infer", "--weights"], "lemevit infer: flag --weights needs a value"),
            (["infer", "--verbose=yes"], "lemevit infer: flag --verbose takes no value"),
            (["infer", "--weights", BUNDLED, "--input", work("good.npy"), "--output", work("y.npy"), "extra"],
             "lemevit infer: unexpected argument 'extra'"),
            (["bench", "--weights", BUNDLED, "stray"], "lemevit bench: unexpected argument 'stray'"),
            (["evaluate", "--data", work("empty_folder"), "stray"], "lemevit evaluate: unexpected argument 'stray'"),
            (["classify", "--top_k", "3", SAMPLE], "lemevit classify: unknown flag --top_k"),
            (["features", SAMPLE, "-o", work("feat"), "--stage", "1"], "lemevit features: unknown flag --stage"),
        ]
        for args, message in cases:
            p = self.check_error(args, message)
            self.assertIn("see lemevit %s --help" % args[0], p.stderr)

    def test_missing_required_flags(self):
        cases = [
            (["infer", "--input", work("good.npy"), "--output", work("y.npy")], "missing required flag --weights"),
            (["infer", "--weights", BUNDLED, "--output", work("y.npy")], "missing required flag --input"),
            (["infer", "--weights", BUNDLED, "--input", work("good.npy")], "missing required flag --output"),
            (["bench"], "missing required flag --weights"),
            (["evaluate"], "missing required flag --data"),
            (["features", SAMPLE], "missing required flag --output"),
            (["attention", SAMPLE], "missing required flag --output"),
            (["classify"], "lemevit classify: no images given"),
            (["features", "-o", work("feat")], "lemevit features: no images given"),
            (["attention", "-o", work("a.png")], "lemevit attention: give exactly one image"),
            (["attention", SAMPLE, SAMPLE, "-o", work("a.png")], "lemevit attention: give exactly one image"),
        ]
        for args, message in cases:
            self.check_error(args, message)

    def test_bad_flag_values(self):
        infer = ["infer", "--weights", BUNDLED, "--input", work("good.npy"), "--output", work("y.npy")]
        cases = [
            (infer + ["--threads", "0"], "flag --threads must be an integer in [1, 1024], got '0'"),
            (infer + ["--threads", "two"], "flag --threads must be an integer in [1, 1024], got 'two'"),
            (infer + ["--threads", "4x"], "flag --threads must be an integer in [1, 1024], got '4x'"),
            (infer + ["--dca-scale", "sqrt"], "--dca-scale must be official or head_dim, got 'sqrt'"),
            (["bench", "--weights", BUNDLED, "--batch", "0"], "flag --batch must be an integer in [1, 4096], got '0'"),
            (["bench", "--weights", BUNDLED, "--batch", "99999999999"], "flag --batch must be an integer"),
            (["bench", "--weights", BUNDLED, "--iterations", "-3"], "flag --iterations must be an integer"),
            (["bench", "--weights", BUNDLED, "--warmup", "x"], "flag --warmup must be an integer"),
            (["classify", "--top-k", "0", SAMPLE], "flag --top-k must be an integer in [1, 1048576], got '0'"),
            (["classify", "--batch", "5000", SAMPLE], "flag --batch must be an integer in [1, 4096], got '5000'"),
            (["classify", "--resize", "28", SAMPLE], "--resize must be WxH, got '28'"),
            (["classify", "--resize", "0x28", SAMPLE], "--resize: '0' is not a positive size"),
            (["classify", "--resize", "28xabc", SAMPLE], "--resize: 'abc' is not a positive size"),
            (["classify", "--resize-short", "-5", SAMPLE], "--resize-short: '-5' is not a positive size"),
            (["classify", "--crop", "many", SAMPLE], "--crop: 'many' is not a positive size"),
            (["classify", "--interp", "lanczos", SAMPLE], "--interp: interp 'lanczos' is not one of"),
            (["classify", "--mean", "0.5,0.5", SAMPLE], "--mean must be three comma-separated numbers, got '0.5,0.5'"),
            (["classify", "--mean", "a,b,c", SAMPLE], "--mean must be three comma-separated numbers"),
            (["classify", "--std", "0.5,0.5,0.5,0.5", SAMPLE], "--std must be three comma-separated numbers"),
            (["classify", "--std", "0,1,1", SAMPLE], "std must be finite and nonzero"),
            (["classify", "--preset", "imagenet", SAMPLE], "--preset must be seed, timm or timm-legacy, got 'imagenet'"),
            (["evaluate", "--data", work("empty_folder"), "--batch", "0"], "flag --batch must be an integer"),
            (["evaluate", "--data", work("empty_folder"), "--compare", "fp64"],
             "--compare must be fp32, bf16 or int8, got 'fp64'"),
            (["evaluate", "--data", work("empty_folder"), "--precision", "int8", "--compare", "int8"],
             "--compare int8 is the precision being evaluated"),
            (["features", SAMPLE, "-o", work("feat"), "--stages", "9"], "--stages: this model has stages 0.."),
            (["features", SAMPLE, "-o", work("feat"), "--stages", "x"], "--stages: 'x' is not a non-negative integer"),
            (["attention", SAMPLE, "-o", work("a.png"), "--size", "1"], "flag --size must be an integer in [16, 8192]"),
            (["attention", SAMPLE, "-o", work("a.png"), "--alpha", "2"], "--alpha must be a number in [0, 1]"),
            (["attention", SAMPLE, "-o", work("a.png"), "--alpha", "half"], "--alpha must be a number in [0, 1]"),
            (["attention", SAMPLE, "-o", work("a.png"), "--block", "1"], "--block must be STAGE.BLOCK"),
            (["attention", SAMPLE, "-o", work("a.png"), "--block", "x.0"], "--block: 'x' is not a non-negative integer"),
            (["attention", SAMPLE, "-o", work("a.png"), "--block", "7.3"], "block 7.3 is not a C, D or D2 block"),
            (["attention", SAMPLE, "-o", work("a.png"), "--meta-tokens", "999"], "--meta-tokens: this model has meta tokens 0.."),
        ]
        for args, message in cases:
            self.check_error(args, message)

    def test_number_with_trailing_junk(self):
        self.check_error(["attention", SAMPLE, "-o", work("a.png"), "--alpha", "0.5junk"],
                         "--alpha must be a number in [0, 1]")

    # --- files ----------------------------------------------------------------

    def test_bad_weights_files(self):
        custom = os.path.join(FIXTURES, "custom_small.safetensors")
        cases = [
            (work("missing.safetensors"), ["cannot open"]),
            (work("empty_folder"), ["not a regular file"]),
            (work("truncated.safetensors"), ["past the end", "truncated"]),
            (work("garbage.safetensors"), ["header is not valid JSON"]),
            (work("huge_header.safetensors"), ["header length 209715200 runs past the end of the file"]),
            (custom, ["holds a custom model", "that this program does not compile in", "Compiled in:"]),
            (SAMPLE, ["runs past the end of the file"]),
        ]
        for path, messages in cases:
            for command in (["infer", "--input", work("good.npy"), "--output", work("y.npy")],
                            ["bench"], ["classify", SAMPLE]):
                self.check_error(command + ["--weights", path], path, *messages)
        # A file without lemevit metadata.
        raw = get(BUNDLED)
        n = struct.unpack("<Q", raw[:8])[0]
        import json
        header = json.loads(raw[8:8 + n])
        del header["__metadata__"]
        h = json.dumps(header).encode()
        h += b" " * ((-(8 + len(h))) % 8)
        bare = work("bare.safetensors")
        put(bare, struct.pack("<Q", len(h)) + h + raw[8 + n:])
        self.check_error(["bench", "--weights", bare], bare, "no lemevit.* architecture metadata")

    def test_bad_input_arrays(self):
        def infer(path, out=work("y.npy")):
            return ["infer", "--weights", BUNDLED, "--input", path, "--output", out]
        cases = [
            (work("shape.npy"), "input has shape [2, 3, 32, 32], expected [N, 3, 28, 28]"),
            (work("rank3.npy"), "input has shape [3, 28, 28], expected [N, 3, 28, 28]"),
            (work("f64.npy"), "dtype '<f8' is not float32"),
            (work("int.npy"), "dtype '<i4' is not float32"),
            (work("truncated.npy"), "truncated: shape needs 18816 bytes of data"),
            (work("text.npy"), "not a .npy file (bad magic)"),
            (work("missing.npy"), "cannot open"),
        ]
        for path, message in cases:
            self.check_error(infer(path), path, message)
        out = work("no_such_folder/y.npy")
        self.check_error(infer(work("good.npy"), out), out, "cannot open for writing")
        p = self.run_tool(*infer(work("good.npy")))
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_bad_images(self):
        cases = [
            (work("text.png"), "cannot decode image"),
            (work("truncated.png"), "truncated PNG"),
            (work("missing.png"), "cannot open image: no such file"),
            (work("empty_folder"), "cannot open image: is a directory"),
            (work("bomb.png"), "image declares 60000x60000 = 3600000000 pixels, over the limit"),
        ]
        for path, message in cases:
            # classify reports each bad image and goes on; the exit status says some failed.
            p = self.check_error(["classify", path, SAMPLE], path, message)
            self.assertIn(SAMPLE + ":", p.stdout)
            self.check_error(["attention", path, "-o", work("a.png")], path, message)
            self.check_error(["features", path, "-o", work("feat")], path, message)

    def test_bad_data_folders(self):
        self.check_error(["evaluate", "--data", work("missing_folder")], work("missing_folder"), "not a directory")
        self.check_error(["evaluate", "--data", work("empty_folder")], work("empty_folder"),
                         "no class sub-folders (expected ROOT/<class>/<image>)")
        no_images = work("no_images")
        for c in ("Bag", "Coat"):
            os.makedirs(os.path.join(no_images, c), exist_ok=True)
        self.check_error(["evaluate", "--data", no_images], no_images, "no images found in class sub-folders")
        two = work("two_classes")
        for c in ("a", "b"):
            os.makedirs(os.path.join(two, c), exist_ok=True)
            shutil.copy(SAMPLE, os.path.join(two, c, "x.png"))
        self.check_error(["evaluate", "--data", two], two, "has 2 class folders but the model has 10 classes")

    def test_class_maps_that_would_mislabel(self):
        def layout(name, folders):
            root = work(name)
            for f in folders:
                os.makedirs(os.path.join(root, f), exist_ok=True)
                shutil.copy(SAMPLE, os.path.join(root, f, "x.png"))
            return root
        # Two folders carry class names of other indices: the sorted order would mislabel them.
        mixed = layout("mixed", ["Ankle boot", "Bag"] + ["c%d" % i for i in range(2, 10)])
        self.check_error(["evaluate", "--data", mixed], mixed,
                         "some folders are named after the model's classes of other indices",
                         "sorted folders: 0 Ankle boot, 1 Bag, 2 c2, 3 c3",
                         "model classes:  0 T-shirt/top, 1 Trouser, 2 Pullover",
                         "--class-map sorted")
        # Names asked for, a folder that names no class.
        self.check_error(["evaluate", "--data", mixed, "--class-map", "names"], mixed,
                         "folders not named after a class of the model: 'c2', 'c3'",
                         "its classes: 0 T-shirt/top, 1 Trouser")
        # A subset of the classes with one typo: neither map applies.
        typo = layout("typo", ["Bag", "Snekaer", "Coat"])
        self.check_error(["evaluate", "--data", typo], typo, "has 3 class folders but the model has 10 classes",
                         "folders not named after one of its classes: 'Snekaer'")
        twice = layout("twice", ["Bag", "bag", "Coat"])
        self.check_error(["evaluate", "--data", twice], twice, "folders 'Bag' and 'bag' both name class 8 'Bag'")
        self.check_error(["evaluate", "--data", twice, "--class-map", "byname"],
                         "--class-map must be auto, names or sorted, got 'byname'")

    def test_unwritable_outputs(self):
        target = work("no_such_folder/out.json")
        self.check_error(["bench", "--weights", BUNDLED, "--iterations", "1", "--json", target], target,
                         "cannot write the JSON result")
        self.check_error(["classify", SAMPLE, "--json", target], target, "cannot write the JSON result")
        png = work("no_such_folder/a.png")
        self.check_error(["attention", SAMPLE, "-o", png], png, "cannot write the PNG")


if __name__ == "__main__":
    unittest.main()
