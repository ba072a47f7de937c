#pragma once
// The model types the `lemevit` tool compiles in (instantiated once, in
// models.cpp; every command sees them only through lemevit::AnyModel).
#include <memory>
#include <string>

#include <lemevit/any_model.hpp>

namespace cli {

// Loads any compiled-in model whose architecture matches the file's metadata;
// otherwise throws, listing what is compiled in.
std::unique_ptr<lemevit::AnyModel> load_model(const std::string& path, lemevit::LoadOptions options = {});

}  // namespace cli
