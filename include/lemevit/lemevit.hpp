#pragma once
// The one header to include: model types, official variants, backends,
// weight loading and .npy I/O.
#include "lemevit/any_model.hpp"
#include "lemevit/arch.hpp"
#include "lemevit/backend.hpp"
#include "lemevit/bundled.hpp"
#include "lemevit/default_backend.hpp"
#include "lemevit/error.hpp"
#include "lemevit/flops.hpp"
#include "lemevit/io/npy.hpp"
#include "lemevit/io/safetensors.hpp"
#include "lemevit/metadata.hpp"
#include "lemevit/model.hpp"
#include "lemevit/observer.hpp"
#include "lemevit/profile.hpp"
#include "lemevit/workspace.hpp"
