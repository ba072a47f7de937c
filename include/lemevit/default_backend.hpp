#pragma once
// backend::Default: the SIMD backend on the best instruction set the compiler
// targets, or the scalar Reference where xsimd is unavailable (or the user
// defines LEMEVIT_NO_SIMD).
#include "lemevit/backend/reference.hpp"

#if !defined(LEMEVIT_NO_SIMD) && __has_include(<xsimd/xsimd.hpp>) && \
    __has_include("lemevit/backend/simd.hpp")
#include "lemevit/backend/simd.hpp"
namespace lemevit::backend {
using Default = Simd<>;
}
#else
namespace lemevit::backend {
using Default = Reference;
}
#endif
