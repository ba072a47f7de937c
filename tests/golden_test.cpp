// Whole-model golden tests: seeded random checkpoints made by the independent
// PyTorch reference (tools/lemevit_ref.py), written in every checkpoint form
// users have and converted by tools/convert.py, must give PyTorch's logits
// (computed in float64) within 1e-4 relative error.
#include <lemevit/backend/eigen.hpp>
#include <lemevit/lemevit.hpp>

#include "support.hpp"

using namespace lemevit;
using test_support::fixture;

namespace {

using test_support::kCustomSmall;

template <class Net>
double run_case(const std::string& name, std::optional<DcaScale> policy = {}) {
  return test_support::golden_error<Net>(name, policy);
}

template <class Net>
void golden(const std::string& name) {
  const double err = run_case<Net>(name);
  INFO("case " << name << ": relative error " << err);
  CHECK(err < 1e-4);
}

using backend::Default;
}  // namespace

TEST_CASE("a custom configuration with D2, head_dim 16 and 8 meta tokens", "[golden][small]") {
  golden<Model<kCustomSmall, Input<96, 64>, Classes<7>, Default>>("custom_small");
  golden<Model<kCustomSmall, Input<96, 64>, Classes<7>, Default>>("custom_small_headdim");
}

TEST_CASE("the Reference backend matches PyTorch too", "[golden][small]") {
  golden<Model<kCustomSmall, Input<96, 64>, Classes<7>, backend::Reference>>("custom_small");
  golden<Model<kCustomSmall, Input<96, 64>, Classes<7>, backend::Reference>>("custom_small_headdim");
}

TEST_CASE("the Eigen backend matches PyTorch too", "[golden][small]") {
  golden<Model<kCustomSmall, Input<96, 64>, Classes<7>, backend::Eigen>>("custom_small");
}

TEST_CASE("backbone features of every stage match PyTorch", "[golden][features][small]") {
  test_support::golden_features<Model<kCustomSmall, Input<96, 64>, Classes<7>, Default>>("custom_small");
}

// The official variants. Cross builds (run under qemu) leave them out
// (LEMEVIT_TEST_SMALL_ONLY): each variant is a model type of its own, these
// cases are most of this file's compile time, and under qemu the Eigen one
// alone took 42 s.
#ifndef LEMEVIT_TEST_SMALL_ONLY
TEST_CASE("every official variant matches PyTorch at 224", "[golden]") {
  golden<Model<variants::Tiny, Input<224, 224>, Classes<1000>, Default>>("tiny_224");
  golden<Model<variants::Small, Input<224, 224>, Classes<1000>, Default>>("small_224");
  golden<Model<variants::Base, Input<224, 224>, Classes<1000>, Default>>("base_224");
  golden<Model<variants::SmallV2, Input<224, 224>, Classes<1000>, Default>>("small_v2_224");
  golden<Model<variants::TinyV2, Input<224, 224>, Classes<1000>, Default>>("tiny_v2_224");
  golden<Model<variants::VitTiny, Input<224, 224>, Classes<1000>, Default>>("vit_tiny_224");
}

TEST_CASE("the head_dim scale policy matches PyTorch, and is not the official one", "[golden]") {
  using Tiny = Model<variants::Tiny, Input<224, 224>, Classes<1000>, Default>;
  using TinyV2 = Model<variants::TinyV2, Input<224, 224>, Classes<1000>, Default>;
  golden<Tiny>("tiny_224_headdim");
  golden<TinyV2>("tiny_v2_224_headdim");
  // The file records head_dim; forcing the official scale must break the match.
  CHECK(run_case<Tiny>("tiny_224_headdim", DcaScale::Official) > 1e-3);
  CHECK(run_case<TinyV2>("tiny_v2_224_headdim", DcaScale::Official) > 1e-3);
}

TEST_CASE("non-224 input, 4-class head, batch 3, whole-module pickle", "[golden]") {
  golden<Model<variants::SmallV2, Input<160, 160>, Classes<4>, Default>>("small_v2_160_c4");
  // The same file through a Dynamic class count.
  golden<Model<variants::SmallV2, Input<160, 160>, Classes<Dynamic>, Default>>("small_v2_160_c4");
}

TEST_CASE("the Eigen backend matches PyTorch on LeMeViT-Tiny", "[golden]") {
  golden<Model<variants::Tiny, Input<224, 224>, Classes<1000>, backend::Eigen>>("tiny_224");
}

TEST_CASE("backbone features of LeMeViT-Tiny match PyTorch", "[golden][features]") {
  test_support::golden_features<Model<variants::Tiny, Input<224, 224>, Classes<1000>, Default>>("tiny_224");
}
#endif
