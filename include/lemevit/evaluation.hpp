#pragma once
// Evaluating a classifier over an ImageFolder tree (ROOT/<class>/.../<image>):
// which model class each folder holds, the image list, and the seed
// article's metrics. Shared by `lemevit evaluate` and the Python module.
//
// Folders are matched to the model's classes by name when every folder is
// named after one (case, ' ', '_', '-' and '/' ignored: "T-shirt_top" is
// "T-shirt/top"), whatever their order, and the test set may hold only some
// of the classes. Otherwise the sorted folder order is the class index, as
// torchvision's ImageFolder assigns it (what a model trained with it
// expects); that is refused when some folders carry class names of other
// indices, since the labels would then be silently wrong.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "lemevit/error.hpp"

namespace lemevit::evaluation {

enum class ClassMap {
  Auto,    // by name when every folder names a class, else sorted order
  Names,   // by name; a folder that names no class is an error
  Sorted,  // sorted order (ImageFolder); a folder named after a class of another index is a warning
};

inline ClassMap parse_class_map(std::string_view s, const std::string& what) {
  if (s == "auto") return ClassMap::Auto;
  if (s == "names") return ClassMap::Names;
  if (s == "sorted") return ClassMap::Sorted;
  throw Error(what + " must be auto, names or sorted, got '" + std::string(s) + "'");
}

// A class or folder name compared without case, with ' ', '_', '-', '/' alike.
inline std::string class_key(std::string_view name) {
  std::string k;
  for (unsigned char c : name) k += (c == ' ' || c == '-' || c == '/') ? '_' : char(std::tolower(c));
  return k;
}

// torchvision's IMG_EXTENSIONS.
inline bool is_image_file(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  for (const char* e : {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
    if (ext == e) return true;
  return false;
}

struct Sample {
  std::string path;  // relative to the root, '/'-separated
  int label;         // the model's class index
};

struct ImageFolder {
  std::vector<std::string> folders;  // class sub-folders, sorted
  std::vector<int> folder_class;     // the model class each folder holds
  bool by_name = false;              // matched by name (else sorted order)
  std::vector<Sample> samples;       // sorted by path
  std::vector<std::string> warnings;  // skipped links and folders, a sorted order that contradicts names

  // The classes the folders hold, in index order: the classes metrics average over.
  std::vector<int> classes() const {
    std::vector<int> c = folder_class;
    std::sort(c.begin(), c.end());
    return c;
  }
};

namespace detail {
namespace fs = std::filesystem;

// Image files under `dir`, following directory links; a link back to a
// folder being walked (a loop) or one that cannot be resolved is skipped
// with a warning.
inline void walk(const fs::path& root, const fs::path& dir, std::vector<fs::path>& open,
                 std::vector<std::string>& files, std::vector<std::string>& warnings) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  if (ec) {
    warnings.push_back(dir.string() + ": skipped, cannot read the folder (" + ec.message() + ")");
    return;
  }
  open.push_back(dir);
  for (; it != end; it.increment(ec)) {
    if (ec) {
      warnings.push_back(dir.string() + ": stopped reading the folder (" + ec.message() + ")");
      break;
    }
    const fs::path& p = it->path();
    std::error_code sec;
    const fs::file_status st = fs::status(p, sec);
    if (sec) {  // a dangling link, or one that resolves to itself
      warnings.push_back(p.string() + ": skipped (" + sec.message() + ")");
      continue;
    }
    if (fs::is_directory(st)) {
      if (std::any_of(open.begin(), open.end(), [&](const fs::path& o) {
            std::error_code eq;
            return fs::equivalent(p, o, eq);
          })) {
        warnings.push_back(p.string() + ": skipped, a symbolic-link loop (leads back to " +
                           fs::canonical(p, sec).string() + ")");
        continue;
      }
      walk(root, p, open, files, warnings);
    } else if (fs::is_regular_file(st) && is_image_file(p)) {
      files.push_back(p.lexically_relative(root).generic_string());
    }
  }
  open.pop_back();
}

inline std::string numbered(const std::vector<std::string>& names) {
  std::string s;
  for (std::size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + std::to_string(i) + " " + names[i];
  return s;
}
}  // namespace detail

// Scans `root`. `class_names`: the model's class names in index order, empty
// when its weights carry none (then only the sorted order applies).
inline ImageFolder scan_image_folder(const std::string& root, const std::vector<std::string>& class_names,
                                     int num_classes, ClassMap map = ClassMap::Auto) {
  namespace fs = std::filesystem;
  ImageFolder out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw Error(root + ": not a directory");
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code sec;
    if (it->is_directory(sec)) out.folders.push_back(it->path().filename().string());
    else if (sec) out.warnings.push_back(it->path().string() + ": skipped (" + sec.message() + ")");
  }
  if (ec) throw Error(root + ": cannot read the folder (" + ec.message() + ")");
  std::sort(out.folders.begin(), out.folders.end());
  if (out.folders.empty()) throw Error(root + ": no class sub-folders (expected ROOT/<class>/<image>)");

  // The class each folder names, -1 if none.
  std::map<std::string, int> by_key;
  for (std::size_t c = 0; c < class_names.size(); ++c) by_key.emplace(class_key(class_names[c]), int(c));
  std::vector<int> named(out.folders.size(), -1);
  std::vector<std::string> unnamed;
  for (std::size_t f = 0; f < out.folders.size(); ++f) {
    const auto it = by_key.find(class_key(out.folders[f]));
    if (it != by_key.end()) named[f] = it->second;
    else unnamed.push_back("'" + out.folders[f] + "'");
  }
  const auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  if (map == ClassMap::Names) {
    if (class_names.empty())
      throw Error(root + ": the model's weights name no classes (lemevit.class_names), so folders cannot be "
                         "matched by name");
    if (!unnamed.empty())
      throw Error(root + ": folders not named after a class of the model: " + join(unnamed) +
                  " (its classes: " + detail::numbered(class_names) + ")");
  }
  out.by_name = map != ClassMap::Sorted && !class_names.empty() && unnamed.empty();
  if (out.by_name) {
    out.folder_class = named;
    for (std::size_t a = 0; a < named.size(); ++a)
      for (std::size_t b = a + 1; b < named.size(); ++b)
        if (named[a] == named[b])
          throw Error(root + ": folders '" + out.folders[a] + "' and '" + out.folders[b] + "' both name class " +
                      std::to_string(named[a]) + " '" + class_names[std::size_t(named[a])] + "'");
  } else {
    if (int(out.folders.size()) != num_classes)
      throw Error(root + ": has " + std::to_string(out.folders.size()) + " class folders but the model has " +
                  std::to_string(num_classes) + " classes" +
                  (class_names.empty() || unnamed.size() == out.folders.size()
                       ? std::string()
                       : "; folders not named after one of its classes: " + join(unnamed) +
                             " (name every folder after a class to evaluate a subset)"));
    bool contradicts = false;
    for (std::size_t f = 0; f < named.size(); ++f) contradicts |= named[f] >= 0 && named[f] != int(f);
    if (contradicts) {
      const std::string orders = "  sorted folders: " + detail::numbered(out.folders) +
                                 "\n  model classes:  " + detail::numbered(class_names);
      if (map != ClassMap::Sorted)
        throw Error(root + ": some folders are named after the model's classes of other indices, so the sorted "
                           "folder order (ImageFolder) would mislabel them:\n" + orders +
                    "\nname every folder after one of the model's classes (they are then matched by name), or "
                    "use the class map 'sorted' (--class-map sorted) to take the sorted order anyway");
      out.warnings.push_back("class index = sorted folder order as asked, although some folders are named after "
                             "classes of other indices:\n" + orders);
    }
    for (std::size_t f = 0; f < out.folders.size(); ++f) out.folder_class.push_back(int(f));
  }

  for (std::size_t f = 0; f < out.folders.size(); ++f) {
    const fs::path dir = fs::path(root) / out.folders[f];
    std::vector<fs::path> open{fs::path(root)};
    std::vector<std::string> files;
    if (fs::equivalent(dir, root, ec))
      out.warnings.push_back(dir.string() + ": skipped, a symbolic-link loop (leads back to " + root + ")");
    else
      detail::walk(fs::path(root), dir, open, files, out.warnings);
    if (files.empty()) out.warnings.push_back(dir.string() + ": no images");
    std::sort(files.begin(), files.end());
    for (auto& p : files) out.samples.push_back({std::move(p), out.folder_class[f]});
  }
  if (out.samples.empty()) throw Error(root + ": no images found in class sub-folders");
  return out;
}

struct ClassScore {
  int index;
  double precision, recall, f1;
  long support;
};

struct Metrics {
  long images = 0, correct = 0;
  double accuracy = 0, macro_precision = 0, macro_recall = 0, macro_f1 = 0;
  std::vector<std::vector<long>> confusion;  // [true class][predicted class], num_classes x num_classes
  std::vector<ClassScore> per_class;         // `classes`, in the order given
};

// Accuracy, and precision/recall/F1 of each of `classes` and their means (0
// where undefined, scikit-learn's zero_division=0 with labels=classes).
// predicted[i] < 0 marks an image that was not evaluated.
inline Metrics score(const std::vector<int>& labels, const std::vector<int>& predicted, int num_classes,
                     const std::vector<int>& classes) {
  if (labels.size() != predicted.size()) throw Error("score: labels and predictions differ in count");
  Metrics m;
  m.confusion.assign(std::size_t(num_classes), std::vector<long>(std::size_t(num_classes), 0));
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (predicted[i] < 0) continue;
    if (labels[i] < 0 || labels[i] >= num_classes || predicted[i] >= num_classes)
      throw Error("score: class index out of range");
    ++m.confusion[std::size_t(labels[i])][std::size_t(predicted[i])];
    m.correct += labels[i] == predicted[i];
    ++m.images;
  }
  if (m.images == 0) throw Error("score: no evaluated images");
  m.accuracy = double(m.correct) / double(m.images);
  for (int c : classes) {
    ClassScore s{c, 0, 0, 0, 0};
    long as_c = 0;
    const auto uc = std::size_t(c);
    for (int r = 0; r < num_classes; ++r) as_c += m.confusion[std::size_t(r)][uc];
    for (long n : m.confusion[uc]) s.support += n;
    const long tp = m.confusion[uc][uc];
    s.precision = as_c ? double(tp) / double(as_c) : 0.0;
    s.recall = s.support ? double(tp) / double(s.support) : 0.0;
    s.f1 = s.precision + s.recall > 0 ? 2 * s.precision * s.recall / (s.precision + s.recall) : 0.0;
    m.macro_precision += s.precision / double(classes.size());
    m.macro_recall += s.recall / double(classes.size());
    m.macro_f1 += s.f1 / double(classes.size());
    m.per_class.push_back(s);
  }
  return m;
}

}  // namespace lemevit::evaluation
