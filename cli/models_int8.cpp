// The compiled-in model types in int8 (see models.hpp).
#include "models_lowp.hpp"

namespace cli {
LEMEVIT_CLI_LOAD_LOWP(lemevit::Precision::Int8)
}  // namespace cli
