// Every official variant at 224x224 RGB and the bundled Fashion-MNIST model,
// class count from the weights file.
#include "models.hpp"

#include <lemevit/lemevit.hpp>

namespace cli {
namespace {
template <lemevit::ArchSpec A>
using At224 = lemevit::Model<A, lemevit::Input<224, 224, 3>, lemevit::Classes<lemevit::Dynamic>>;

using Bundled = lemevit::Model<lemevit::bundled::FashionMnist, lemevit::bundled::FashionMnistInput,
                               lemevit::Classes<lemevit::Dynamic>>;

using KnownModels =
    lemevit::Registry<Bundled, At224<lemevit::variants::Tiny>, At224<lemevit::variants::Small>,
                      At224<lemevit::variants::Base>, At224<lemevit::variants::SmallV2>,
                      At224<lemevit::variants::TinyV2>, At224<lemevit::variants::VitTiny>>;
}  // namespace

std::unique_ptr<lemevit::AnyModel> load_model(const std::string& path, lemevit::LoadOptions options) {
  return KnownModels::load(path, options);
}

}  // namespace cli
