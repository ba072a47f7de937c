// Whole models on the GPU (backend::Cuda) against PyTorch's golden logits and
// features. Without a CUDA device only the [no-device] case runs and the test
// exits 77, a SKIP (cuda_main.cpp).
#include <lemevit/backend/cuda.hpp>
#include <lemevit/lemevit.hpp>

#include "support.hpp"

using namespace lemevit;
using test_support::fixture;

namespace {

using test_support::kCustomSmall;

template <class Net>
void golden(const std::string& name) {
  const Net net = Net::load(fixture(name + ".safetensors"));
  const auto x = io::read_npy(fixture(name + ".input.npy"));
  const auto y = io::read_npy(fixture(name + ".logits.npy"));
  const int batch = int(x.shape[0]);
  auto ws = net.make_workspace(batch);
  std::vector<float> out(y.data.size());
  net.forward(x.data.data(), batch, out.data(), ws);
  const double err = test_support::relative_error(out.data(), y.data.data(), out.size());
  INFO("case " << name << " on " << backend::cuda::device_name() << ": relative error " << err);
  CHECK(err < 1e-4);
}

}  // namespace

TEST_CASE("loading a model onto a missing GPU is an error", "[cuda][no-device]") {
  using Net = Model<kCustomSmall, Input<96, 64>, Classes<7>, backend::Cuda>;
  if (backend::cuda::available()) return;  // the golden cases below load onto it
  REQUIRE_THROWS_WITH(Net::load(fixture("custom_small.safetensors")), Catch::Contains("no CUDA device"));
}

TEST_CASE("whole models on the GPU match PyTorch", "[cuda]") {
  golden<Model<kCustomSmall, Input<96, 64>, Classes<7>, backend::Cuda>>("custom_small");
  golden<Model<kCustomSmall, Input<96, 64>, Classes<7>, backend::Cuda>>("custom_small_headdim");
  golden<Model<variants::Tiny, Input<224, 224>, Classes<1000>, backend::Cuda>>("tiny_224");
  golden<Model<variants::TinyV2, Input<224, 224>, Classes<1000>, backend::Cuda>>("tiny_v2_224");
  golden<Model<variants::VitTiny, Input<224, 224>, Classes<1000>, backend::Cuda>>("vit_tiny_224");
  golden<Model<variants::SmallV2, Input<160, 160>, Classes<4>, backend::Cuda>>("small_v2_160_c4");
}

TEST_CASE("backbone features on the GPU match PyTorch", "[cuda]") {
  test_support::golden_features<Model<kCustomSmall, Input<96, 64>, Classes<7>, backend::Cuda>>("custom_small");
}
