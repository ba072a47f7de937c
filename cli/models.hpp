#pragma once
// The model types the `lemevit` tool compiles in (instantiated once, in
// models.cpp; every command sees them only through lemevit::AnyModel).
#include <memory>
#include <string>

#include <lemevit/any_model.hpp>
#include <lemevit/lemevit.hpp>

namespace cli {

// Every official variant at 224x224 RGB and the bundled Fashion-MNIST model,
// class count from the weights file, on backend B.
template <lemevit::ArchSpec A, class B>
using At224 = lemevit::Model<A, lemevit::Input<224, 224, 3>, lemevit::Classes<lemevit::Dynamic>, B>;

template <class B>
using Bundled = lemevit::Model<lemevit::bundled::FashionMnist, lemevit::bundled::FashionMnistInput,
                               lemevit::Classes<lemevit::Dynamic>, B>;

template <class B>
using KnownModels =
    lemevit::Registry<Bundled<B>, At224<lemevit::variants::Tiny, B>, At224<lemevit::variants::Small, B>,
                      At224<lemevit::variants::Base, B>, At224<lemevit::variants::SmallV2, B>,
                      At224<lemevit::variants::TinyV2, B>, At224<lemevit::variants::VitTiny, B>>;

enum class Device { Cpu, Cuda };

// Loads any compiled-in model whose architecture matches the file's metadata,
// on the CPU (SIMD backend, in `precision`) or the GPU (CUDA backend, when
// built with it; fp32 only); otherwise throws, listing what is compiled in.
std::unique_ptr<lemevit::AnyModel> load_model(const std::string& path, lemevit::LoadOptions options = {},
                                              Device device = Device::Cpu,
                                              lemevit::Precision precision = lemevit::Precision::Fp32);

// KnownModels on the CPU in precision P. The bf16 and int8 registries are
// instantiated in files of their own (models_bf16.cpp, models_int8.cpp) so
// that the three compile in parallel.
template <lemevit::Precision P>
std::unique_ptr<lemevit::AnyModel> load_cpu_model(const std::string& path, lemevit::LoadOptions options);

}  // namespace cli
