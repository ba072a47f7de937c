#pragma once
// The architecture record tools/convert.py writes into a safetensors file's
// metadata, and the check that it matches the model type it is loaded into.
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "lemevit/arch.hpp"
#include "lemevit/backend.hpp"
#include "lemevit/error.hpp"
#include "lemevit/io/safetensors.hpp"

namespace lemevit {

struct LoadOptions {
  // Overrides the dual-cross-attention scale recorded in the file's metadata.
  std::optional<DcaScale> dca_scale;
};

struct ModelInfo {
  bool has_arch = false;  // false for files without lemevit.* metadata
  std::string variant;    // "lemevit_tiny", ..., or "custom"
  std::vector<int> depths, dims;
  std::vector<std::string> kinds;
  int mlp_ratio = 0, head_dim = 0, meta_tokens = 0, in_chans = 0, num_classes = 0;
  DcaScale dca_scale = DcaScale::Official;
  std::string class_names;  // JSON list, optional
  std::string preprocess;   // JSON object, optional
};

namespace detail {
inline std::vector<std::string> split(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep)) out.push_back(item);
  return out;
}
inline int parse_int(const std::string& path, const std::string& key, const std::string& v) {
  try {
    std::size_t used = 0;
    const int n = std::stoi(v, &used);
    if (used == v.size()) return n;
  } catch (...) {
  }
  throw Error(path + ": metadata " + key + " = '" + v + "' is not an integer");
}
template <class T>
std::string join(const std::vector<T>& v) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) s += ",";
    if constexpr (std::is_same_v<T, std::string>) s += v[i];
    else s += std::to_string(v[i]);
  }
  return s;
}
}  // namespace detail

inline ModelInfo read_model_info(const io::SafetensorsFile& f) {
  ModelInfo m;
  const std::string& p = f.path();
  auto get = [&](const char* key) { return f.meta(key); };
  if (auto s = get("lemevit.dca_scale")) {
    if (*s == "official") m.dca_scale = DcaScale::Official;
    else if (*s == "head_dim") m.dca_scale = DcaScale::HeadDim;
    else throw Error(p + ": metadata lemevit.dca_scale = '" + *s + "', expected official or head_dim");
  }
  if (auto s = get("lemevit.class_names")) m.class_names = *s;
  if (auto s = get("lemevit.preprocess")) m.preprocess = *s;
  const auto* depths = get("lemevit.depths");
  if (!depths) return m;
  m.has_arch = true;
  auto need = [&](const char* key) -> const std::string& {
    if (auto s = get(key)) return *s;
    throw Error(p + ": metadata has lemevit.depths but lacks " + key);
  };
  auto ints = [&](const char* key) {
    std::vector<int> v;
    for (auto& s : detail::split(need(key))) v.push_back(detail::parse_int(p, key, s));
    return v;
  };
  m.variant = get("lemevit.variant") ? *get("lemevit.variant") : "custom";
  m.depths = ints("lemevit.depths");
  m.dims = ints("lemevit.dims");
  m.kinds = detail::split(need("lemevit.kinds"));
  m.mlp_ratio = detail::parse_int(p, "lemevit.mlp_ratio", need("lemevit.mlp_ratio"));
  m.head_dim = detail::parse_int(p, "lemevit.head_dim", need("lemevit.head_dim"));
  m.meta_tokens = detail::parse_int(p, "lemevit.meta_tokens", need("lemevit.meta_tokens"));
  m.in_chans = detail::parse_int(p, "lemevit.in_chans", need("lemevit.in_chans"));
  m.num_classes = detail::parse_int(p, "lemevit.num_classes", need("lemevit.num_classes"));
  return m;
}

namespace detail {
// An ArchSpec's per-stage lists in the metadata's form.
struct StageLists {
  std::vector<int> depths, dims;
  std::vector<std::string> kinds;
};
inline StageLists stage_lists(const ArchSpec& a) {
  StageLists l;
  for (int i = 0; i < a.num_stages; ++i) {
    l.depths.push_back(a.depths[i]);
    l.dims.push_back(a.dims[i]);
    l.kinds.push_back(kind_name(a.kinds[i]));
  }
  return l;
}
}  // namespace detail

// Human-readable architecture summary, for messages and --verbose.
inline std::string describe(const ArchSpec& a) {
  const auto [depths, dims, kinds] = detail::stage_lists(a);
  return std::string(a.name.data()) + " (depths " + detail::join(depths) + ", dims " +
         detail::join(dims) + ", kinds " + detail::join(kinds) + ", mlp_ratio " +
         std::to_string(a.mlp_ratio) + ", head_dim " + std::to_string(a.head_dim) +
         ", meta_tokens " + std::to_string(a.meta_tokens) + ")";
}

// Does the file's architecture record match ArchSpec `a`? Empty when it does,
// otherwise the list of differences.
inline std::string arch_differences(const ModelInfo& m, const ArchSpec& a) {
  std::string diff;
  auto add = [&](const std::string& what, const std::string& file, const std::string& type) {
    diff += (diff.empty() ? "" : "; ") + what + " " + file + " in the file vs " + type + " in the type";
  };
  const auto [depths, dims, kinds] = detail::stage_lists(a);
  if (m.depths != depths) add("depths", detail::join(m.depths), detail::join(depths));
  if (m.dims != dims) add("dims", detail::join(m.dims), detail::join(dims));
  if (m.kinds != kinds) add("kinds", detail::join(m.kinds), detail::join(kinds));
  if (m.mlp_ratio != a.mlp_ratio) add("mlp_ratio", std::to_string(m.mlp_ratio), std::to_string(a.mlp_ratio));
  if (m.head_dim != a.head_dim) add("head_dim", std::to_string(m.head_dim), std::to_string(a.head_dim));
  if (m.meta_tokens != a.meta_tokens)
    add("meta_tokens", std::to_string(m.meta_tokens), std::to_string(a.meta_tokens));
  return diff;
}

template <ArchSpec A>
void check_model_info(const std::string& path, const ModelInfo& m, int channels, int classes) {
  if (!m.has_arch) return;  // no record: the per-tensor shape checks still apply
  std::string diff = arch_differences(m, A);
  auto add = [&](const std::string& s) { diff += (diff.empty() ? "" : "; ") + s; };
  if (m.in_chans != channels)
    add("in_chans " + std::to_string(m.in_chans) + " in the file vs " + std::to_string(channels) + " in the type");
  if (classes != Dynamic && m.num_classes != classes)
    add("num_classes " + std::to_string(m.num_classes) + " in the file vs " + std::to_string(classes) +
        " in the type");
  if (!diff.empty())
    throw Error(path + ": holds a " + m.variant + " model that does not match the model type " +
                std::string(A.name.data()) + ": " + diff);
}

}  // namespace lemevit
