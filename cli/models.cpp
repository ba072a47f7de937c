// The compiled-in model types on the CPU; the GPU ones live in a plug-in
// module (models_cuda.cpp) loaded on demand.
#include "models.hpp"

#include <dlfcn.h>

#include <filesystem>
#include <iostream>

namespace cli {

namespace {
// The CUDA module next to the executable (build tree or install), else where the build put it.
std::unique_ptr<lemevit::AnyModel> load_cuda_model(const std::string& path, lemevit::LoadOptions options) {
#ifdef LEMEVIT_CUDA_MODULE
  std::error_code ec;
  const auto here = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  const std::string beside = (here / std::filesystem::path(LEMEVIT_CUDA_MODULE).filename()).string();
  void* module = dlopen(beside.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!module) module = dlopen(LEMEVIT_CUDA_MODULE, RTLD_NOW | RTLD_LOCAL);
  if (!module) throw lemevit::Error(std::string("--device cuda: cannot load the CUDA module: ") + dlerror());
  using Load = lemevit::AnyModel* (*)(const char*, const lemevit::LoadOptions*, std::string*);
  auto load = reinterpret_cast<Load>(dlsym(module, "lemevit_load_cuda_model"));
  if (!load) throw lemevit::Error("--device cuda: the CUDA module lacks lemevit_load_cuda_model");
  std::string error;
  std::unique_ptr<lemevit::AnyModel> model(load(path.c_str(), &options, &error));
  if (!model) throw lemevit::Error(error);
  return model;  // the module stays loaded for the life of the process
#else
  (void)path, (void)options;
  throw lemevit::Error("--device cuda: this lemevit was built without the CUDA backend (nvcc was not found)");
#endif
}
}  // namespace

template <>
std::unique_ptr<lemevit::AnyModel> load_cpu_model<lemevit::Precision::Fp32>(const std::string& path,
                                                                           lemevit::LoadOptions options) {
  return KnownModels<lemevit::backend::Default>::load(path, options);
}

std::unique_ptr<lemevit::AnyModel> load_model(const std::string& path, lemevit::LoadOptions options,
                                              Device device, lemevit::Precision precision) {
  using lemevit::Precision;
  if (device == Device::Cuda) {
    if (precision != Precision::Fp32)
      throw lemevit::Error(std::string("--precision ") + lemevit::precision_name(precision) +
                           ": the CUDA backend runs fp32 only; use --device cpu");
    return load_cuda_model(path, options);
  }
  std::unique_ptr<lemevit::AnyModel> model;
  switch (precision) {
    case Precision::Bf16: model = load_cpu_model<Precision::Bf16>(path, options); break;
    case Precision::Int8: model = load_cpu_model<Precision::Int8>(path, options); break;
    case Precision::Fp32: model = load_cpu_model<Precision::Fp32>(path, options); break;
  }
  // Asked for speed, a portable low precision gives the opposite: say so.
  if (const std::string note = lemevit::portable_precision_note(precision, model->gemm_path()); !note.empty())
    std::cerr << "warning: " << note << "\n";
  if (const std::string note = lemevit::widened_precision_note(precision, model->gemm_path()); !note.empty())
    std::cerr << "note: " << note << "\n";
  return model;
}

}  // namespace cli
