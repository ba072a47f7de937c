#pragma once
// Binding weights by name. Each layer asks for its own tensors by state-dict
// name and expected shape; the loader converts f16/bf16 to f32, checks shape,
// dtype and finiteness, and remembers what was used so that leftovers are
// reported as unexpected tensors.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "lemevit/error.hpp"
#include "lemevit/io/safetensors.hpp"

namespace lemevit {

class WeightLoader {
 public:
  explicit WeightLoader(std::shared_ptr<const io::SafetensorsFile> file)
      : file_(std::move(file)) {}

  // A source of seeded random weights of whatever shape is asked for, for
  // benchmarks and smoke tests without a checkpoint (not for accuracy).
  static WeightLoader random(std::uint64_t seed) {
    WeightLoader w(nullptr);
    w.rng_.seed(seed);
    return w;
  }

  bool is_random() const { return !file_; }
  std::string source() const { return file_ ? file_->path() : std::string("random weights"); }

  // f32 view of tensor `name`, which must have exactly `shape`. The span
  // points into the mapping when the file stores aligned f32 (zero copy),
  // otherwise into a converted copy owned by this loader.
  std::span<const float> floats(const std::string& name, std::vector<std::int64_t> shape) {
    if (!file_) return random_tensor(name, shape);
    auto it = file_->tensors().find(name);
    if (it == file_->tensors().end())
      throw Error(file_->path() + ": missing tensor '" + name + "' (expected shape " +
                  io::shape_str(shape) + ")");
    const io::TensorInfo& t = use(name, it->second, shape);
    const std::size_t n = std::size_t(t.numel());
    const float* out = nullptr;
    switch (t.dtype) {
      case io::DType::F32:
        if (reinterpret_cast<std::uintptr_t>(t.data) % alignof(float) == 0) {
          out = reinterpret_cast<const float*>(t.data);
        } else {
          auto& buf = owned_.emplace_back(n);
          std::memcpy(buf.data(), t.data, n * 4);
          out = buf.data();
        }
        break;
      case io::DType::F16:
      case io::DType::BF16: {
        auto& buf = owned_.emplace_back(n);
        for (std::size_t i = 0; i < n; ++i) {
          std::uint16_t h;
          std::memcpy(&h, t.data + 2 * i, 2);
          buf[i] = t.dtype == io::DType::F16 ? io::half_to_float(h) : io::bf16_to_float(h);
        }
        out = buf.data();
        break;
      }
      case io::DType::I8: {  // tools/convert.py --dtype int8: w = q * scale[row]
        const Int8Weights q = int8_parts(name, t);
        auto& buf = owned_.emplace_back(n);
        const std::size_t per_row = n / q.scales.size();
        for (std::size_t i = 0; i < n; ++i) buf[i] = float(q.values[i]) * q.scales[i / per_row];
        out = buf.data();
        break;
      }
      default:
        throw Error(file_->path() + ": tensor '" + name + "' has dtype " +
                    io::dtype_name(t.dtype) + ", expected F32, F16, BF16 or I8 (with '" + name +
                    "_scale')");
    }
    for (std::size_t i = 0; i < n; ++i)
      if (!std::isfinite(out[i]))
        throw Error(file_->path() + ": tensor '" + name + "' contains " +
                    (std::isnan(out[i]) ? "NaN" : "Inf") + " at flat index " + std::to_string(i));
    return {out, n};
  }

  // A weight stored as int8 per output channel (tools/convert.py --dtype
  // int8): the values and one scale per row, w = q * scale. Empty when the
  // file stores `name` in a float dtype (or the weights are random).
  struct Int8Weights {
    std::span<const std::int8_t> values;
    std::span<const float> scales;
  };
  std::optional<Int8Weights> int8(const std::string& name, const std::vector<std::int64_t>& shape) {
    if (!file_) return std::nullopt;
    auto it = file_->tensors().find(name);
    if (it == file_->tensors().end() || it->second.dtype != io::DType::I8) return std::nullopt;
    return int8_parts(name, use(name, it->second, shape));
  }

  // Shape of a tensor the caller cannot know statically (the class count of
  // a `Dynamic` head); throws if absent.
  const std::vector<std::int64_t>& shape_of(const std::string& name) const {
    if (!file_) throw Error("random weights have no tensor '" + name + "' to take a shape from");
    auto it = file_->tensors().find(name);
    if (it == file_->tensors().end()) throw Error(file_->path() + ": missing tensor '" + name + "'");
    return it->second.shape;
  }

  // Every tensor that no layer asked for is an error: the file belongs to a
  // different architecture than the type it is loaded into.
  void check_all_used() const {
    if (!file_) return;
    std::string extra;
    int count = 0;
    for (const auto& [name, t] : file_->tensors()) {
      if (used_.count(name) || name.ends_with("num_batches_tracked")) continue;
      if (count++ < 8) extra += (extra.empty() ? "" : ", ") + name + " " + io::shape_str(t.shape);
    }
    if (count)
      throw Error(file_->path() + ": " + std::to_string(count) +
                  " unexpected tensor(s) not used by this model type: " + extra +
                  (count > 8 ? ", ..." : ""));
  }

 private:
  // Tensor `name` checked against the expected shape and marked used.
  const io::TensorInfo& use(const std::string& name, const io::TensorInfo& t,
                            const std::vector<std::int64_t>& shape) {
    if (t.shape != shape)
      throw Error(file_->path() + ": tensor '" + name + "' has shape " + io::shape_str(t.shape) +
                  ", expected " + io::shape_str(shape));
    used_.insert(name);
    return t;
  }

  // An I8 tensor and its "<name>_scale" (F32, one finite positive scale per
  // row), which is marked used.
  Int8Weights int8_parts(const std::string& name, const io::TensorInfo& t) {
    const std::string scale_name = name + "_scale";
    auto it = file_->tensors().find(scale_name);
    if (t.shape.empty() || t.shape[0] <= 0)
      throw Error(file_->path() + ": int8 tensor '" + name + "' needs at least one row");
    const std::vector<std::int64_t> want{t.shape[0]};
    if (it == file_->tensors().end())
      throw Error(file_->path() + ": int8 tensor '" + name + "' has no '" + scale_name +
                  "' (F32, shape " + io::shape_str(want) + "): int8 weights need their per-row scales");
    const io::TensorInfo& s = it->second;
    if (s.dtype != io::DType::F32 || s.shape != want)
      throw Error(file_->path() + ": tensor '" + scale_name + "' is " + io::dtype_name(s.dtype) + " " +
                  io::shape_str(s.shape) + ", expected F32 " + io::shape_str(want));
    auto& scales = owned_.emplace_back(std::size_t(want[0]));
    std::memcpy(scales.data(), s.data, scales.size() * sizeof(float));
    for (std::size_t i = 0; i < scales.size(); ++i)
      if (!(scales[i] > 0.0f) || !std::isfinite(scales[i]))
        throw Error(file_->path() + ": tensor '" + scale_name + "' holds " + std::to_string(scales[i]) +
                    " at row " + std::to_string(i) + ": scales must be finite and positive");
    used_.insert(scale_name);
    return {{reinterpret_cast<const std::int8_t*>(t.data), std::size_t(t.numel())}, scales};
  }

  std::span<const float> random_tensor(const std::string& name, const std::vector<std::int64_t>& shape) {
    std::size_t n = 1;
    for (auto d : shape) n *= std::size_t(d);
    auto& buf = owned_.emplace_back(n);
    // Scales that keep activations O(1) through deep stacks: fan-in scaled
    // weights, unit-ish norms and variances.
    const std::int64_t fan_in = shape.size() > 1 ? n / std::size_t(shape[0]) : 1;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> uniform(0.5f, 1.5f);
    const bool vector = shape.size() == 1;
    for (auto& v : buf) {
      if (name.ends_with("running_var")) v = uniform(rng_);
      else if (vector && name.ends_with(".weight")) v = 1.0f + 0.1f * normal(rng_);
      else if (vector) v = 0.1f * normal(rng_);
      else v = normal(rng_) / std::sqrt(float(fan_in));
    }
    return {buf.data(), n};
  }

  std::shared_ptr<const io::SafetensorsFile> file_;
  std::mt19937_64 rng_;
  std::set<std::string, std::less<>> used_;
  std::deque<std::vector<float>> owned_;
};

}  // namespace lemevit
