// The drop-in use of the library: one header, a variant type, weights, an image.
//   classify_image WEIGHTS.safetensors IMAGE
#include <lemevit/image/preprocess.hpp>
#include <lemevit/lemevit.hpp>

#include <algorithm>
#include <cstdio>

using Net = lemevit::Model<lemevit::bundled::FashionMnist, lemevit::bundled::FashionMnistInput,
                           lemevit::Classes<10>>;

int main(int argc, char** argv) {
  if (argc != 3) return std::fprintf(stderr, "usage: %s WEIGHTS IMAGE\n", argv[0]), 2;
  try {
    const Net net = Net::load(argv[1]);
    auto ws = net.make_workspace(1);
    const auto pp = lemevit::image::Preprocess::from_json(net.info().preprocess);
    const auto x = lemevit::image::to_tensor(lemevit::image::load_image(argv[2]), pp, Net::height, Net::width);
    float logits[10];
    net.forward(x.data(), 1, logits, ws);
    std::printf("class %d\n", int(std::max_element(logits, logits + 10) - logits));
  } catch (const lemevit::Error& e) {
    return std::fprintf(stderr, "error: %s\n", e.what()), 1;
  }
}
