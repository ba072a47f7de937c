"""The installed tree as its users see it (run by `meson test`): `meson install`
into a temporary DESTDIR, the prefix moved elsewhere (nothing may point back at
the install prefix or the source tree), then examples/classify_image.cpp built
out of tree twice, with CMake's find_package(lemevit) and with pkg-config's
lemevit.pc, and both programs run on the bundled samples: each must print the
class of samples/labels.txt (the dataset's labels). The Python module, when
built, must land in a directory Debian's python3 searches and work from there.

Environment: LEMEVIT_BUILD (the Meson build dir), LEMEVIT_PREFIX and
LEMEVIT_LIBDIR (its install prefix and libdir), LEMEVIT_CXX (the C++ compiler
command, one word a line), LEMEVIT_WORK (a scratch folder).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("LEMEVIT_BUILD", "")
WORK = os.environ.get("LEMEVIT_WORK", "/tmp/lemevit-install-consumers")
EXAMPLE = os.path.join(ROOT, "examples", "classify_image.cpp")
WEIGHTS = os.path.join(ROOT, "models", "fashion_mnist", "lemevit_fmnist.safetensors")
SAMPLES = os.path.join(ROOT, "models", "fashion_mnist", "samples")
# Fast to compile; speed does not matter for 8 images of 28x28.
OPT = "-O1"


def sh(*cmd, env=None, cwd=None):
    p = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=cwd)
    if p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p.stdout


def compiler():
    """(launcher or None, compiler) from the build's compiler command (ccache c++)."""
    words = os.environ.get("LEMEVIT_CXX", "c++").split("\n")
    return (words[0], words[1]) if len(words) > 1 and os.path.basename(words[0]) == "ccache" else (None, words[0])


class InstalledTree(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not BUILD:
            raise unittest.SkipTest("LEMEVIT_BUILD is not set: run through `meson test`")
        shutil.rmtree(WORK, ignore_errors=True)
        destdir = os.path.join(WORK, "destdir")
        sh("meson", "install", "-C", BUILD, "--destdir", destdir, "--no-rebuild", "--quiet")
        # Relocate: the prefix as installed under DESTDIR, moved to another path.
        cls.prefix = os.path.join(WORK, "moved", "prefix")
        os.makedirs(os.path.dirname(cls.prefix))
        os.rename(destdir + os.environ["LEMEVIT_PREFIX"], cls.prefix)
        shutil.rmtree(destdir)
        cls.libdir = os.path.join(cls.prefix, os.environ["LEMEVIT_LIBDIR"])
        with open(os.path.join(SAMPLES, "labels.txt")) as f:
            cls.labels = {line.split("\t")[0]: int(line.split("\t")[1]) for line in f if line.strip()}

    def check_program(self, exe):
        for name, label in sorted(self.labels.items()):
            out = sh(exe, WEIGHTS, os.path.join(SAMPLES, name))
            self.assertEqual(out.strip(), "class %d" % label, name)

    def check_include_dirs(self, words):
        """The headers come from the moved prefix, never the source tree or the original prefix."""
        dirs = set()
        for i, w in enumerate(words):
            if w in ("-I", "-isystem") and i + 1 < len(words):
                dirs.add(os.path.normpath(words[i + 1]))
            elif w.startswith("-I"):
                dirs.add(os.path.normpath(w[2:]))
        self.assertIn(os.path.join(self.prefix, "include"), dirs)
        for wrong in ("include", "backends/reference", "backends/simd", "backends/eigen"):
            self.assertNotIn(os.path.join(ROOT, wrong), dirs)
        self.assertNotIn(os.path.join(os.environ["LEMEVIT_PREFIX"], "include"), dirs)

    def test_cmake_find_package(self):
        src, bld = os.path.join(WORK, "cmake"), os.path.join(WORK, "cmake", "build")
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(src, "CMakeLists.txt"), "w") as f:
            f.write("cmake_minimum_required(VERSION 3.16)\n"
                    "project(consumer CXX)\n"
                    "find_package(lemevit 0.1 CONFIG REQUIRED)\n"
                    "add_executable(classify_image %s)\n"
                    "target_link_libraries(classify_image PRIVATE lemevit::lemevit)\n" % json.dumps(EXAMPLE))
        launcher, cxx = compiler()
        sh("cmake", "-S", src, "-B", bld, "-G", "Ninja", "-DCMAKE_PREFIX_PATH=" + self.prefix,
           "-DCMAKE_CXX_COMPILER=" + cxx, "-DCMAKE_BUILD_TYPE=None", "-DCMAKE_CXX_FLAGS=" + OPT,
           "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", "-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF",
           *(["-DCMAKE_CXX_COMPILER_LAUNCHER=" + launcher] if launcher else []))
        with open(os.path.join(bld, "CMakeCache.txt")) as f:
            self.assertIn("lemevit_DIR:PATH=" + os.path.join(self.libdir, "cmake", "lemevit"), f.read())
        sh("cmake", "--build", bld)
        with open(os.path.join(bld, "compile_commands.json")) as f:
            command = json.load(f)[0]["command"]
        self.check_include_dirs(command.split())
        self.assertRegex(command, r"-std=(c|gnu)\+\+20")
        self.assertIn("-fopenmp", command)
        self.assertIn("-DLEMEVIT_IMAGE_LIBJPEG", command)
        self.check_program(os.path.join(bld, "classify_image"))

    def test_cmake_version_file_refuses_another_major_version(self):
        src = os.path.join(WORK, "cmake_version")
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(src, "CMakeLists.txt"), "w") as f:
            f.write("cmake_minimum_required(VERSION 3.16)\nproject(consumer CXX)\n"
                    "find_package(lemevit 7.0 CONFIG REQUIRED)\n")
        p = subprocess.run(["cmake", "-S", src, "-B", os.path.join(src, "build"),
                            "-DCMAKE_PREFIX_PATH=" + self.prefix], capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        # Refused by the version file (without one CMake would say "version: unknown").
        self.assertIn('compatible with requested version "7.0"', p.stderr)
        self.assertIn("lemevitConfig.cmake, version: 0.1.0", p.stderr)

    def test_pkg_config(self):
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(self.libdir, "pkgconfig"))
        cflags = sh("pkg-config", "--cflags", "lemevit", env=env).split()
        libs = sh("pkg-config", "--libs", "lemevit", env=env).split()
        self.check_include_dirs(cflags)
        launcher, cxx = compiler()
        exe = os.path.join(WORK, "pkgconfig_classify_image")
        sh(*([launcher] if launcher else []), cxx, OPT, *cflags, EXAMPLE, "-o", exe, *libs)
        self.check_program(exe)

    def test_python_module_lands_in_debians_path(self):
        found = glob.glob(os.path.join(self.prefix, "**", "lemevit.cpython-*.so"), recursive=True)
        if not found:
            self.skipTest("the Python module is not built (pybind11 not found)")
        site = os.path.dirname(found[0])
        clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if os.environ["LEMEVIT_PREFIX"] in ("/usr", "/usr/local"):
            searched = sh(sys.executable, "-c", "import sys; print('\\n'.join(sys.path))", env=clean).split("\n")
            self.assertIn(os.path.join(os.environ["LEMEVIT_PREFIX"], os.path.relpath(site, self.prefix)), searched)
        name, label = sorted(self.labels.items())[0]
        out = sh(sys.executable, "-c", "import lemevit, sys; print(lemevit.__file__); "
                 "print(lemevit.load(sys.argv[1]).classify([sys.argv[2]])[0]['top'][0]['class'])",
                 WEIGHTS, os.path.join(SAMPLES, name), env=dict(clean, PYTHONPATH=site))
        self.assertEqual(out.split(), [found[0], str(label)])


if __name__ == "__main__":
    unittest.main()
