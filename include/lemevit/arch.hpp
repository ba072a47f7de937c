#pragma once
// The architecture of a LeMeViT model as a compile-time value.
//
// An `ArchSpec` is a structural type, so it can be a template argument:
// `Model<variants::Tiny, ...>` instantiates every stage and block with
// static shapes. Users describe their own configuration the same way.
#include <array>
#include <cstddef>

namespace lemevit {

// The four attention kinds of the paper (SPEC.md, "Idea").
enum class Kind { C, D, D2, S };

inline constexpr const char* kind_name(Kind k) {
  switch (k) {
    case Kind::C: return "C";
    case Kind::D: return "D";
    case Kind::D2: return "D2";
    case Kind::S: return "S";
  }
  return "?";
}

inline constexpr int kMaxStages = 8;

struct ArchSpec {
  int num_stages = 0;
  std::array<int, kMaxStages> depths{};
  std::array<int, kMaxStages> dims{};
  std::array<Kind, kMaxStages> kinds{};
  int mlp_ratio = 4;
  int head_dim = 32;
  int meta_tokens = 16;
  // Official registration name ("lemevit_tiny"...) or "custom".
  std::array<char, 32> name{};

  constexpr int total_blocks() const {
    int n = 0;
    for (int i = 0; i < num_stages; ++i) n += depths[i];
    return n;
  }
  constexpr int last_dim() const { return dims[num_stages - 1]; }
  constexpr int heads(int stage) const { return dims[stage] / head_dim; }
  // downsample_layers.i (i >= 1) is an identity after a cross-attention stage.
  constexpr bool downsamples_before(int stage) const {
    return stage == 0 || kinds[stage - 1] != Kind::C;
  }
};

namespace detail {
template <std::size_t N>
constexpr std::array<char, 32> name_of(const char (&s)[N]) {
  static_assert(N <= 32, "architecture name is limited to 31 characters");
  std::array<char, 32> out{};
  for (std::size_t i = 0; i + 1 < N; ++i) out[i] = s[i];
  return out;
}
}  // namespace detail

// Builds an ArchSpec from braced lists: arch<5>({1,2,2,8,2}, {64,...}, {Kind::C,...}).
template <int Stages, std::size_t N = 7>
constexpr ArchSpec arch(const int (&depths)[Stages], const int (&dims)[Stages],
                        const Kind (&kinds)[Stages], int mlp_ratio = 4,
                        int head_dim = 32, int meta_tokens = 16,
                        const char (&name)[N] = "custom") {
  static_assert(Stages >= 1 && Stages <= kMaxStages,
                "a LeMeViT has between 1 and 8 stages");
  ArchSpec a{};
  a.num_stages = Stages;
  for (int i = 0; i < Stages; ++i) {
    a.depths[i] = depths[i];
    a.dims[i] = dims[i];
    a.kinds[i] = kinds[i];
  }
  a.mlp_ratio = mlp_ratio;
  a.head_dim = head_dim;
  a.meta_tokens = meta_tokens;
  a.name = detail::name_of(name);
  return a;
}

// The official registrations of SPEC.md ("Variants").
namespace variants {
using enum Kind;
inline constexpr ArchSpec Tiny = arch<5>({1, 2, 2, 8, 2}, {64, 64, 128, 192, 320},
                                         {C, D, D, S, S}, 4, 32, 16, "lemevit_tiny");
inline constexpr ArchSpec Small = arch<5>({1, 2, 2, 6, 2}, {96, 96, 192, 320, 384},
                                          {C, D, D, S, S}, 4, 32, 16, "lemevit_small");
inline constexpr ArchSpec Base = arch<5>({2, 4, 4, 18, 4}, {96, 96, 192, 384, 512},
                                         {C, D, D, S, S}, 4, 32, 16, "lemevit_base");
inline constexpr ArchSpec SmallV2 = arch<5>({1, 2, 2, 8, 2}, {64, 64, 128, 256, 512},
                                            {C, D, D, S, S}, 3, 32, 16, "lemevit_small_v2");
inline constexpr ArchSpec TinyV2 = arch<5>({2, 2, 2, 4, 2}, {96, 96, 192, 320, 384},
                                           {C, D2, D2, S, S}, 4, 32, 16, "lemevit_tiny_v2");
// The all-standard-attention baseline of the same code base ("standard ViT attention").
inline constexpr ArchSpec VitTiny = arch<4>({2, 2, 4, 2}, {96, 192, 320, 384},
                                            {S, S, S, S}, 4, 32, 16, "vit_tiny");
}  // namespace variants

// Input geometry and class count as types, Eigen-style `Dynamic` for the
// class count chosen at load time.
inline constexpr int Dynamic = -1;

template <int H, int W, int Channels = 3>
struct Input {
  static constexpr int height = H, width = W, channels = Channels;
  static_assert(H >= 4 && W >= 4, "input must be at least 4x4 pixels");
  static_assert(Channels >= 1, "input needs at least one channel");
};

template <int N>
struct Classes {
  static constexpr int value = N;
  static_assert(N == Dynamic || N >= 1, "class count must be >= 1 or Dynamic");
};

// Spatial size after a 3x3 stride-2 padding-1 convolution.
inline constexpr int conv_s2(int n) { return (n - 1) / 2 + 1; }

}  // namespace lemevit
