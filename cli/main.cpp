// `lemevit`: run LeMeViT checkpoints converted by tools/convert.py.
#include <cstring>
#include <iostream>
#include <string>

#include "common.hpp"

namespace {
constexpr const char* kUsage =
    "usage: lemevit <command> [flags]\n"
    "\n"
    "commands:\n"
    "  classify   classify images (the bundled Fashion-MNIST model by default)\n"
    "  evaluate   accuracy, macro precision/recall/F1 and confusion matrix over an ImageFolder\n"
    "  attention  heat map of where the meta tokens attend (last dual cross-attention layer)\n"
    "  features   each stage's feature map of an image, as .npy (backbone features)\n"
    "  infer      run a model on a preprocessed float32 .npy batch (N x C x H x W)\n"
    "  bench      time the forward pass (median after warm-up)\n"
    "\n"
    "`lemevit <command> --help` describes a command's flags.\n";
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  try {
    if (command == "infer") return cli::infer(argc - 2, argv + 2);
    if (command == "bench") return cli::bench(argc - 2, argv + 2);
    if (command == "classify") return cli::classify(argc - 2, argv + 2);
    if (command == "evaluate") return cli::evaluate(argc - 2, argv + 2);
    if (command == "attention") return cli::attention(argc - 2, argv + 2);
    if (command == "features") return cli::features(argc - 2, argv + 2);
    std::cerr << "lemevit: unknown command '" << command << "'\n\n" << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
