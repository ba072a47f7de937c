#pragma once
// The architecture of the bundled default model
// (models/fashion_mnist/lemevit_fmnist.safetensors, trained by
// tools/train_fashion_mnist.py): a small LeMeViT for 28x28 Fashion-MNIST
// images, with every attention kind of the paper but D2.
#include "lemevit/arch.hpp"

namespace lemevit::bundled {

inline constexpr ArchSpec FashionMnist =
    arch<4>({1, 2, 2, 2}, {64, 64, 96, 128}, {Kind::C, Kind::D, Kind::D, Kind::S},
            /*mlp_ratio*/ 3, /*head_dim*/ 32, /*meta_tokens*/ 8, "lemevit_fmnist");
using FashionMnistInput = Input<28, 28, 3>;

}  // namespace lemevit::bundled
