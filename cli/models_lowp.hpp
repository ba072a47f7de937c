#pragma once
// load_cpu_model<P> for bf16 and int8 (models_bf16.cpp, models_int8.cpp).
#include "models.hpp"

#if __has_include(<xsimd/xsimd.hpp>) && !defined(LEMEVIT_NO_SIMD)
#define LEMEVIT_CLI_LOAD_LOWP(P)                                                                         \
  template <>                                                                                            \
  std::unique_ptr<lemevit::AnyModel> load_cpu_model<P>(const std::string& path,                          \
                                                       lemevit::LoadOptions options) {                   \
    return KnownModels<lemevit::backend::Simd<xsimd::default_arch, P>>::load(path, options);             \
  }
#else
#define LEMEVIT_CLI_LOAD_LOWP(P)                                                                         \
  template <>                                                                                            \
  std::unique_ptr<lemevit::AnyModel> load_cpu_model<P>(const std::string&, lemevit::LoadOptions) {       \
    throw lemevit::Error(std::string("--precision ") + lemevit::precision_name(P) +                      \
                         ": this lemevit was built without the SIMD backend (xsimd)");                  \
  }
#endif
