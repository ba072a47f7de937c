// The compiled-in model types on the GPU, built as a plug-in module that
// `lemevit` loads only for --device cuda: the CUDA libraries are large, and
// linking them into the tool would cost every CPU run their memory.
#include <lemevit/backend/cuda.hpp>

#include "models.hpp"

extern "C" lemevit::AnyModel* lemevit_load_cuda_model(const char* path, const lemevit::LoadOptions* options,
                                                      std::string* error) {
  try {
    if (!lemevit::backend::cuda::available())
      throw lemevit::Error("--device cuda: no usable CUDA device on this machine");
    return cli::KnownModels<lemevit::backend::Cuda>::load(path, *options).release();
  } catch (const std::exception& e) {
    *error = e.what();
    return nullptr;
  }
}
