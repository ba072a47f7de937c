#pragma once
// All activation memory of a forward pass, allocated once: a model plans
// its per-image size at compile time, the workspace holds it for up to
// `capacity` images. One workspace per concurrently running thread.
#include <cstddef>
#include <memory>
#include <new>

#include "lemevit/error.hpp"

namespace lemevit {

class Workspace {
 public:
  Workspace(std::size_t floats_per_image, int capacity)
      : floats_per_image_(floats_per_image), capacity_(capacity) {
    if (capacity < 1) throw Error("workspace capacity must be at least 1 image");
    data_.reset(static_cast<float*>(
        ::operator new[](floats_per_image * std::size_t(capacity) * sizeof(float),
                         std::align_val_t(64))));
  }

  float* data() { return data_.get(); }
  int capacity() const { return capacity_; }
  std::size_t floats_per_image() const { return floats_per_image_; }
  std::size_t bytes() const { return floats_per_image_ * std::size_t(capacity_) * sizeof(float); }

 private:
  struct Free {
    void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::size_t floats_per_image_;
  int capacity_;
  std::unique_ptr<float, Free> data_;
};

}  // namespace lemevit
