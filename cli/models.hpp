#pragma once
// The model types the `lemevit` tool compiles in: every official variant at
// 224x224 RGB with the class count taken from the weights file.
#include <lemevit/lemevit.hpp>

namespace cli {

template <lemevit::ArchSpec A>
using At224 = lemevit::Model<A, lemevit::Input<224, 224, 3>, lemevit::Classes<lemevit::Dynamic>>;

using KnownModels =
    lemevit::Registry<At224<lemevit::variants::Tiny>, At224<lemevit::variants::Small>,
                      At224<lemevit::variants::Base>, At224<lemevit::variants::SmallV2>,
                      At224<lemevit::variants::TinyV2>, At224<lemevit::variants::VitTiny>>;

}  // namespace cli
