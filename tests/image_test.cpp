// Image loading, resampling and preprocessing against PIL/torchvision: the
// references come from tests/python/make_image_refs.py, whose output folder
// the build passes in LEMEVIT_IMAGE_REFS. Resampling is compared on
// PIL-decoded pixels (exactness of the resampler apart from the decoder);
// decoding is exact for lossless formats, within a few levels for JPEG.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <random>
#include <string>
#include <vector>

// stb_image's allocations are routed through a counter, so the tests can see
// that forged headers are refused before any image-sized allocation (the
// library's own image buffers are made only after stb has decoded).
namespace alloc_watch {
inline std::size_t largest = 0;
inline void* malloc_(std::size_t n) {
  largest = std::max(largest, n);
  return std::malloc(n);
}
inline void* realloc_(void* p, std::size_t n) {
  largest = std::max(largest, n);
  return std::realloc(p, n);
}
}  // namespace alloc_watch
#define STBI_MALLOC(n) alloc_watch::malloc_(n)
#define STBI_REALLOC(p, n) alloc_watch::realloc_(p, n)
#define STBI_FREE(p) std::free(p)

#include <catch2/catch.hpp>

#include "lemevit/image/image.hpp"
#include "lemevit/image/preprocess.hpp"
#include "lemevit/image/resize.hpp"
#include "lemevit/io/json.hpp"
#include "lemevit/io/npy.hpp"

#if __has_include(<sys/resource.h>)
#include <sys/resource.h>
#endif

namespace {

namespace img = lemevit::image;
using lemevit::Error;
using lemevit::json::Value;

std::string refs_dir() {
  const char* d = std::getenv("LEMEVIT_IMAGE_REFS");
  if (!d || !*d)
    FAIL("LEMEVIT_IMAGE_REFS is not set: run through `meson test`, or run "
         "tests/python/make_image_refs.py --out DIR and export LEMEVIT_IMAGE_REFS=DIR");
  return d;
}
std::string ref(const std::string& name) { return refs_dir() + "/" + name; }

const Value& manifest() {
  static const Value m = [] {
    std::ifstream f(ref("cases.json"));
    if (!f) FAIL("cannot read " + ref("cases.json") + ": regenerate the image references");
    std::stringstream ss;
    ss << f.rdbuf();
    return lemevit::json::parse(ss.str());
  }();
  return m;
}
const std::vector<Value>& cases(const char* key) { return manifest().find(key)->array; }
const std::string& str(const Value& v, const char* key) { return v.find(key)->string; }
int num(const Value& v, const char* key) { return int(v.find(key)->number); }

// A uint8 HWC image stored as float32 .npy.
img::Image npy_image(const std::string& name) {
  const auto a = lemevit::io::read_npy(ref(name));
  REQUIRE(a.shape.size() == 3);
  REQUIRE(a.shape[2] == 3);
  img::Image out(int(a.shape[1]), int(a.shape[0]));
  for (std::size_t i = 0; i < a.data.size(); ++i) out.rgb[i] = std::uint8_t(a.data[i]);
  return out;
}

// Largest per-sample difference, and how many samples differ.
struct Diff {
  int max = 0;
  std::size_t count = 0;
};
Diff diff(const img::Image& a, const img::Image& b) {
  Diff d;
  for (std::size_t i = 0; i < a.rgb.size(); ++i) {
    const int e = std::abs(int(a.rgb[i]) - int(b.rgb[i]));
    d.max = std::max(d.max, e);
    d.count += e != 0;
  }
  return d;
}

img::Interp interp_of(const std::string& s) {
  return s == "bicubic" ? img::Interp::Bicubic : s == "nearest" ? img::Interp::Nearest : img::Interp::Bilinear;
}

img::Preprocess preset(const std::string& name) {
  if (name == "seed_user") return img::Preprocess::seed_user(224);
  if (name == "timm_eval") return img::Preprocess::timm_eval(224);
  if (name == "timm_legacy") return img::Preprocess::timm_legacy(224);
  FAIL("unknown preset " + name);
  return {};
}

float max_abs(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0.0f;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Peak resident memory in MiB (0 where unknown): an image-sized buffer that
// got touched would raise it by gigabytes.
long peak_rss_mib() {
#if __has_include(<sys/resource.h>)
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) == 0) return u.ru_maxrss / 1024;
#endif
  return 0;
}

std::string decode_name(const std::string& file) {
  std::string n = file;
  std::replace(n.begin(), n.end(), '.', '_');
  return "decode_" + n + ".npy";
}

}  // namespace

// JPEG through stb rounds differently from libjpeg-turbo; with
// LEMEVIT_IMAGE_LIBJPEG the library decodes with the same libjpeg as PIL.
#if defined(LEMEVIT_IMAGE_LIBJPEG)
constexpr int kJpegTolerance = 0;
#else
constexpr int kJpegTolerance = 4;
#endif

TEST_CASE("decoding matches PIL's Image.open(f).convert(\"RGB\")", "[image]") {
  for (const auto& c : cases("decode")) {
    const std::string file = str(c, "file");
    const bool exact = c.find("exact")->boolean;
    const img::Image got = img::load_image(ref(file));
    const img::Image want = npy_image(str(c, "ref"));
    INFO(file);
    REQUIRE(got.width == want.width);
    REQUIRE(got.height == want.height);
    // stb weights the chroma of a 4:2:2 JPEG's second-to-last column wrongly
    // (stbi__resample_row_h_2): that column is reported apart.
    Diff d, col;
    for (int y = 0; y < got.height; ++y)
      for (int x = 0; x < got.width; ++x)
        for (int ch = 0; ch < 3; ++ch) {
          const int e = std::abs(int(got.row(y)[3 * x + ch]) - int(want.row(y)[3 * x + ch]));
          Diff& t = (!exact && x == got.width - 2) ? col : d;
          t.max = std::max(t.max, e);
          t.count += e != 0;
        }
    WARN(file << ": max |decoded - PIL| = " << d.max << " (" << d.count << " of " << got.rgb.size()
              << " samples differ), second-to-last column " << col.max);
    CHECK(d.max <= (exact ? 0 : kJpegTolerance));
#if defined(LEMEVIT_IMAGE_LIBJPEG)
    CHECK(col.max == 0);
#endif
  }
}

TEST_CASE("resize matches PIL Image.resize", "[image]") {
  int worst[3] = {0, 0, 0};
  for (const auto& c : cases("resize")) {
    const img::Image src = npy_image(decode_name(str(c, "src")));
    const img::Interp interp = interp_of(str(c, "interp"));
    const img::Image got = img::resize(src, num(c, "width"), num(c, "height"), interp);
    const img::Image want = npy_image(str(c, "ref"));
    INFO(str(c, "src") << " -> " << num(c, "width") << "x" << num(c, "height") << " " << str(c, "interp"));
    REQUIRE(got.width == want.width);
    REQUIRE(got.height == want.height);
    const Diff d = diff(got, want);
    worst[int(interp)] = std::max(worst[int(interp)], d.max);
    CHECK(d.max == 0);
  }
  WARN("max |resize - PIL| nearest " << worst[0] << ", bilinear " << worst[1] << ", bicubic " << worst[2]);
}

TEST_CASE("short-side resize and center crop match torchvision", "[image]") {
  for (const auto& c : cases("crop")) {
    const img::Image src = npy_image(decode_name(str(c, "src")));
    INFO(str(c, "src") << " short " << num(c, "short") << " crop " << num(c, "crop"));
    const img::Image resized = img::resize_short_side(src, num(c, "short"), interp_of(str(c, "interp")));
    const img::Image want_r = npy_image(str(c, "ref_resized"));
    REQUIRE(resized.width == want_r.width);
    REQUIRE(resized.height == want_r.height);
    CHECK(diff(resized, want_r).max == 0);
    const img::Image cropped = img::center_crop(resized, num(c, "crop"), num(c, "crop"));
    const img::Image want = npy_image(str(c, "ref"));
    REQUIRE(cropped.width == want.width);
    REQUIRE(cropped.height == want.height);
    CHECK(diff(cropped, want).max == 0);
    // The pipeline resamples only the pixels the crop keeps: still PIL's.
    img::Preprocess pp;
    pp.resize_short = num(c, "short");
    pp.crop = num(c, "crop");
    pp.interp = interp_of(str(c, "interp"));
    const img::Image fused = pp.apply(src);
    REQUIRE(fused.width == want.width);
    REQUIRE(fused.height == want.height);
    CHECK(diff(fused, want).max == 0);
  }
}

TEST_CASE("a crop of a resize computes the same pixels as resizing everything", "[image]") {
  // Reference: the whole resize then the crop, both checked against PIL above.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int w = 1 + int(rng() % 40), h = 1 + int(rng() % 40);
    img::Image src(w, h);
    for (auto& v : src.rgb) v = std::uint8_t(rng());
    const int out_w = 1 + int(rng() % 60), out_h = 1 + int(rng() % 60);
    const int crop_w = 1 + int(rng() % 50), crop_h = 1 + int(rng() % 50);
    for (img::Interp interp : {img::Interp::Nearest, img::Interp::Bilinear, img::Interp::Bicubic}) {
      INFO(w << "x" << h << " -> " << out_w << "x" << out_h << " crop " << crop_w << "x" << crop_h << " "
              << img::interp_name(interp));
      const img::Image want = img::center_crop(img::resize(src, out_w, out_h, interp), crop_w, crop_h);
      const img::Image got = img::detail::resize_center_crop(src, out_w, out_h, interp, crop_w, crop_h);
      REQUIRE(got.width == crop_w);
      REQUIRE(got.height == crop_h);
      CHECK(got.rgb == want.rgb);
    }
  }
}

TEST_CASE("an extreme aspect ratio is cropped without resizing the whole image", "[image]") {
  // 1 x 13392 pixels (a fuzzer's TGA): timm's pipeline would make it 32 x 428544.
  img::Image thin(1, 13392);
  for (std::size_t i = 0; i < thin.rgb.size(); ++i) thin.rgb[i] = std::uint8_t(i * 7);
  const img::Preprocess pp = img::Preprocess::timm_eval(28);
  const auto x = img::to_tensor(thin, pp, 28, 28);
  CHECK(x.size() == 3u * 28 * 28);
  // A long side past 2^30 is refused by name, not attempted.
  img::Preprocess huge;
  huge.resize_short = 256;
  huge.crop = 224;
  CHECK_THROWS_WITH(huge.apply(img::Image(1, 5'000'000)), Catch::Contains("long side of 1280000000"));
}

TEST_CASE("preset pipelines match torchvision tensors", "[image]") {
  for (const auto& c : cases("pipeline")) {
    const std::string file = str(c, "file"), name = str(c, "preset");
    INFO(file << " " << name);
    const auto want = lemevit::io::read_npy(ref(str(c, "ref")));
    REQUIRE(want.shape == std::vector<std::int64_t>{3, 224, 224});
    const img::Preprocess pp = preset(name);
    // From PIL's pixels: resampling and normalisation only, bitwise.
    const auto exact = img::to_tensor(npy_image(decode_name(file)), pp, 224, 224);
    CHECK(max_abs(exact, want.data) == 0.0f);
    // From the file through stb: exact for lossless files; JPEG decoding
    // differences of a few levels, smoothed by the resize.
    const auto loaded = img::to_tensor(img::load_image(ref(file)), pp, 224, 224);
    const float m = max_abs(loaded, want.data);
    WARN(file << " " << name << ": max |tensor - torchvision| from the file = " << m);
    const float min_std = *std::min_element(pp.std.begin(), pp.std.end());
    CHECK(m <= (c.find("exact_decode")->boolean ? 0.0f : kJpegTolerance / 255.0f / min_std + 1e-6f));
  }
}

TEST_CASE("metadata JSON pipeline, non-square resize given as [H, W]", "[image]") {
  const Value& c = *manifest().find("json_pipeline");
  const img::Preprocess pp = img::Preprocess::from_json(str(c, "json"));
  REQUIRE(pp.resize_wh);
  CHECK(pp.resize_wh->first == num(c, "width"));
  CHECK(pp.resize_wh->second == num(c, "height"));
  const auto want = lemevit::io::read_npy(ref(str(c, "ref")));
  const auto got = img::to_tensor(npy_image(decode_name(str(c, "file"))), pp, num(c, "height"), num(c, "width"));
  CHECK(max_abs(got, want.data) <= 1e-6f);
}

TEST_CASE("broken and hostile files are refused with the file's name", "[image]") {
  const long rss0 = peak_rss_mib();
  for (const auto& [file, word] : manifest().find("broken")->object) {
    INFO(file);
    alloc_watch::largest = 0;
    try {
      img::load_image(ref(file));
      FAIL("no error for " + file);
    } catch (const Error& e) {
      const std::string msg = e.what();
      INFO(msg);
      CHECK(msg.find(file) != std::string::npos);
      CHECK(msg.find(word.string) != std::string::npos);
    }
    // stb allocated nothing image-sized before refusing.
    CHECK(alloc_watch::largest < (1u << 20));
  }
  CHECK(peak_rss_mib() - rss0 < 200);
}

TEST_CASE("forged sizes are refused before decoding even above the pixel limit", "[image]") {
  // With the limit raised past 60000^2, stb's own header checks still refuse
  // without allocating the image.
  alloc_watch::largest = 0;
  CHECK_THROWS_AS(img::load_image(ref("bomb.png"), std::int64_t(1) << 40), Error);
  CHECK(alloc_watch::largest < (1u << 20));
  // The limit is a parameter: a 512x600 photo is refused under 300000 pixels.
  try {
    img::load_image(ref("grace_hopper.jpg"), 300000);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("512x600") != std::string::npos);
  }
  CHECK(img::load_image(ref("grace_hopper.jpg"), 512 * 600).width == 512);
}

TEST_CASE("missing files and directories", "[image]") {
  const std::string missing = ref("no_such_file.jpg");
  CHECK_THROWS_WITH(img::load_image(missing), Catch::Contains(missing) && Catch::Contains("no such file"));
  CHECK_THROWS_WITH(img::load_image(refs_dir()), Catch::Contains("directory"));
}

TEST_CASE("center crop geometry: round half to even, zero padding", "[image]") {
  img::Image src(7, 4);
  for (std::size_t i = 0; i < src.rgb.size(); ++i) src.rgb[i] = std::uint8_t(i + 1);
  // (7 - 2) / 2 = 2.5 rounds to 2; (4 - 1) / 2 = 1.5 rounds to 2.
  img::Image c = img::center_crop(src, 2, 1);
  CHECK(c.rgb[0] == src.row(2)[3 * 2]);
  // Larger than the image: 1 column of zeros left, 2 right; 0 rows top, 1 bottom.
  c = img::center_crop(src, 10, 5);
  CHECK(c.row(0)[0] == 0);
  CHECK(c.row(0)[3] == src.row(0)[0]);
  CHECK(c.row(3)[3 * 7] == src.row(3)[3 * 6]);
  CHECK(c.row(4)[3] == 0);
  CHECK(c.row(0)[3 * 8] == 0);
}

TEST_CASE("short side size follows torchvision's int(S * long / short)", "[image]") {
  CHECK(img::short_side_size(512, 600, 256) == std::pair{256, 300});
  CHECK(img::short_side_size(640, 427, 248) == std::pair{371, 248});
  CHECK(img::short_side_size(500, 500, 224) == std::pair{224, 224});
  CHECK(img::short_side_size(3, 1000, 224) == std::pair{224, 74666});
}

TEST_CASE("preprocess presets and JSON forms", "[image]") {
  const auto eval = img::Preprocess::timm_eval(224);
  CHECK(eval.resize_short == 256);
  CHECK(eval.crop == 224);
  CHECK(eval.interp == img::Interp::Bicubic);
  CHECK(img::Preprocess::timm_legacy(224).resize_short == 248);
  const auto seed = img::Preprocess::seed_user(224);
  CHECK(seed.resize_wh == std::pair{224, 224});
  CHECK(seed.interp == img::Interp::Bilinear);

  // What tools/train_fashion_mnist.py writes.
  auto p = img::Preprocess::from_json(R"({"resize": [28, 28], "interp": "bilinear", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})");
  CHECK(p.resize_wh == std::pair{28, 28});
  CHECK(p.mean[1] == 0.5f);
  p = img::Preprocess::from_json(R"({"resize_short": 256, "crop": 224, "interp": "bicubic",
      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})");
  CHECK(p.resize_short == 256);
  CHECK(p.crop == 224);
  CHECK(p.mean == eval.mean);
  CHECK(p.std == eval.std);
  CHECK(img::Preprocess::from_json(R"({"resize": 256, "crop": 224})").resize_short == 256);

  CHECK_THROWS_WITH(img::Preprocess::from_json(R"({"resize": [28, 28], "interp": "lanczos"})", "model.safetensors"),
                    Catch::Contains("model.safetensors") && Catch::Contains("lanczos"));
  CHECK_THROWS_WITH(img::Preprocess::from_json(R"({"rezise": [28, 28]})"), Catch::Contains("rezise"));
  CHECK_THROWS_WITH(img::Preprocess::from_json(R"({"mean": [0.5, 0.5]})"), Catch::Contains("mean"));
  CHECK_THROWS_WITH(img::Preprocess::from_json(R"({"std": [0.5, 0, 0.5]})"), Catch::Contains("std"));
  CHECK_THROWS_WITH(img::Preprocess::from_json(R"({"resize": [28, 28], "resize_short": 30})"),
                    Catch::Contains("both"));
  CHECK_THROWS_WITH(img::Preprocess::from_json("[1, 2]"), Catch::Contains("object"));
  CHECK_THROWS_AS(img::Preprocess::from_json("{"), Error);
}

TEST_CASE("to_tensor refuses a pipeline that misses the model's input size", "[image]") {
  img::Image src(300, 200);
  std::vector<float> out(3 * 224 * 224);
  CHECK_THROWS_WITH(img::to_tensor(src, img::Preprocess::seed_user(224), out.data(), 256, 256),
                    Catch::Contains("224x224") && Catch::Contains("256x256"));
  img::Preprocess short_only;
  short_only.resize_short = 224;  // 336x224: not square
  CHECK_THROWS_AS(img::to_tensor(src, short_only, out.data(), 224, 224), Error);
  CHECK_NOTHROW(img::to_tensor(src, img::Preprocess::timm_eval(224), out.data(), 224, 224));
}

TEST_CASE("from_gray and identity resize", "[image]") {
  const std::uint8_t g[6] = {0, 10, 20, 30, 40, 255};
  const img::Image im = img::from_gray(3, 2, g);
  CHECK(im.row(1)[3 * 2 + 1] == 255);
  for (auto interp : {img::Interp::Nearest, img::Interp::Bilinear, img::Interp::Bicubic})
    CHECK(img::resize(im, 3, 2, interp).rgb == im.rgb);
  CHECK_THROWS_AS(img::resize(im, 0, 2, img::Interp::Bilinear), Error);
}
