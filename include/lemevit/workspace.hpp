#pragma once
// All activation memory of a forward pass, allocated once: a model plans
// its per-image size at compile time, the workspace holds it for up to
// `capacity` images, in the memory of the model's backend (host memory for
// the CPU backends). One workspace per concurrently running thread.
#include <cstddef>
#include <memory>
#include <new>

#include "lemevit/error.hpp"

namespace lemevit {

class Workspace {
 public:
  using Allocate = float* (*)(std::size_t floats);
  using Release = void (*)(float*);

  Workspace(std::size_t floats_per_image, int capacity, Allocate allocate = &host_allocate,
            Release release = &host_release)
      : floats_per_image_(floats_per_image), capacity_(capacity), data_(nullptr, Free{release}) {
    if (capacity < 1) throw Error("workspace capacity must be at least 1 image");
    data_.reset(allocate(floats_per_image * std::size_t(capacity)));
  }

  float* data() { return data_.get(); }
  int capacity() const { return capacity_; }
  std::size_t floats_per_image() const { return floats_per_image_; }
  std::size_t bytes() const { return floats_per_image_ * std::size_t(capacity_) * sizeof(float); }

 private:
  static float* host_allocate(std::size_t floats) {
    return static_cast<float*>(::operator new[](floats * sizeof(float), std::align_val_t(64)));
  }
  static void host_release(float* p) { ::operator delete[](p, std::align_val_t(64)); }
  struct Free {
    Release release;
    void operator()(float* p) const { release(p); }
  };
  std::size_t floats_per_image_;
  int capacity_;
  std::unique_ptr<float, Free> data_;
};

}  // namespace lemevit
