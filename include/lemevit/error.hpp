#pragma once
// One exception type for everything the library reports: bad weights, bad
// input, bad configuration at runtime. Messages name the file/tensor/flag.
#include <stdexcept>
#include <string>

namespace lemevit {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace lemevit
