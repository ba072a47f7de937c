// The compiled-in model types in bf16 (see models.hpp).
#include "models_lowp.hpp"

namespace cli {
LEMEVIT_CLI_LOAD_LOWP(lemevit::Precision::Bf16)
}  // namespace cli
