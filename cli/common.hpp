#pragma once
// Flags shared by several `lemevit` commands.
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <lemevit/metadata.hpp>

#include "args.hpp"
#include "frontend.hpp"
#include "models.hpp"

namespace cli {

inline void set_threads(const Args& args) {
  const int threads = args.integer("--threads", 0, 1, 1024);
#ifdef _OPENMP
  if (threads > 0) omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

inline lemevit::LoadOptions load_options(const Args& args) {
  lemevit::LoadOptions o;
  if (args.has("--dca-scale")) {
    const std::string s = args.get("--dca-scale");
    if (s == "official") o.dca_scale = lemevit::DcaScale::Official;
    else if (s == "head_dim") o.dca_scale = lemevit::DcaScale::HeadDim;
    else args.fail("--dca-scale must be official or head_dim, got '" + s + "'");
  }
  return o;
}

inline Device device(const Args& args) {
  const std::string d = args.get("--device", "cpu");
  if (d == "cpu") return Device::Cpu;
  if (d == "cuda") return Device::Cuda;
  args.fail("--device must be cpu or cuda, got '" + d + "'");
}

// The precision named by `flag` (--precision, default fp32).
inline lemevit::Precision precision(const Args& args, const std::string& flag = "--precision") {
  try {
    return parse_precision(args.get(flag, "fp32"), flag);
  } catch (const lemevit::Error& e) {
    args.fail(e.what());
  }
}

// Help line of --precision, shared by the commands that take it.
inline constexpr const char* kPrecisionHelp =
    "  --precision  fp32 (default), bf16 or int8: the arithmetic of the matrix products\n"
    "               (LayerNorm, softmax, GELU and residuals stay fp32; attention's two\n"
    "               products run in bf16 where the CPU has AVX512_BF16 or ARM's BF16)\n";

// The model of --weights (or `path`) on --device in precision p (default
// --precision) with --dca-scale applied.
inline std::unique_ptr<lemevit::AnyModel> open_model(const Args& args, const std::string& path, lemevit::Precision p) {
  return load_model(path, load_options(args), device(args), p);
}
inline std::unique_ptr<lemevit::AnyModel> open_model(const Args& args, const std::string& path) {
  return open_model(args, path, precision(args));
}

inline const char* scale_name(lemevit::DcaScale s) {
  return s == lemevit::DcaScale::Official ? "official" : "head_dim";
}

// Each command: parses its own flags from argv (after the command name).
int infer(int argc, char** argv);
int bench(int argc, char** argv);
int classify(int argc, char** argv);
int evaluate(int argc, char** argv);
int attention(int argc, char** argv);
int features(int argc, char** argv);

}  // namespace cli
