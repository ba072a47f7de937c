#pragma once
// Command-line parsing for the `lemevit` tool: every flag is declared, so a
// typo or a missing value is an error naming the flag, never ignored.
#include <map>
#include <set>
#include <string>
#include <vector>

#include <lemevit/error.hpp>

namespace cli {

class Args {
 public:
  // `valued`: flags that take a value; `switches`: flags that do not.
  Args(const std::string& command, int argc, char** argv, std::set<std::string> valued,
       std::set<std::string> switches)
      : command_(command) {
    for (int i = 0; i < argc; ++i) {
      std::string a = argv[i];
      const bool short_flag = valued.count(a) || switches.count(a);  // e.g. -o
      if (!short_flag && (a.rfind("--", 0) != 0 || a == "--")) {
        positional_.push_back(a);
        continue;
      }
      std::string value;
      bool has_value = false;
      if (auto eq = a.find('='); eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_value = true;
      }
      if (switches.count(a)) {
        if (has_value) fail("flag " + a + " takes no value");
        values_[a].assign(1, '1');  // (= "1" trips GCC 12's false -Wrestrict, PR 105329)
      } else if (valued.count(a)) {
        if (!has_value) {
          if (i + 1 >= argc) fail("flag " + a + " needs a value");
          value = argv[++i];
        }
        values_[a] = value;
      } else {
        fail("unknown flag " + a);
      }
    }
  }

  bool has(const std::string& flag) const { return values_.count(flag) > 0; }
  std::string get(const std::string& flag, const std::string& fallback = "") const {
    auto it = values_.find(flag);
    return it == values_.end() ? fallback : it->second;
  }
  std::string required(const std::string& flag) const {
    if (!has(flag)) fail("missing required flag " + flag);
    return get(flag);
  }
  int integer(const std::string& flag, int fallback, int min, int max) const {
    if (!has(flag)) return fallback;
    const std::string v = get(flag);
    try {
      std::size_t used = 0;
      const long n = std::stol(v, &used);
      if (used == v.size() && n >= min && n <= max) return int(n);
    } catch (...) {
    }
    fail("flag " + flag + " must be an integer in [" + std::to_string(min) + ", " +
         std::to_string(max) + "], got '" + v + "'");
  }
  // A real number in [min, max], the whole value read ("0.5junk" is refused).
  float real(const std::string& flag, float fallback, float min, float max, const std::string& what) const {
    if (!has(flag)) return fallback;
    const std::string v = get(flag);
    try {
      std::size_t used = 0;
      const float x = std::stof(v, &used);
      if (used == v.size() && x >= min && x <= max) return x;
    } catch (...) {
    }
    fail(what + ", got '" + v + "'");
  }
  const std::vector<std::string>& positional() const { return positional_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw lemevit::Error("lemevit " + command_ + ": " + what + " (see lemevit " + command_ + " --help)");
  }

 private:
  std::string command_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace cli
