#pragma once
// stb_image compiled into every translation unit that includes this header,
// with internal linkage (STB_IMAGE_STATIC): a header-only library needs no .c
// file, and several TUs (or a user's own stb_image build) cannot clash at link
// time. Files are read by us and handed over from memory (STBI_NO_STDIO).
//
// A TU that also includes stb_image.h itself should define
// LEMEVIT_STB_IMAGE_EXTERNAL before including lemevit headers; then only the
// declarations are seen here and the user's build supplies the definitions.
#if defined(__GNUC__)
#pragma GCC system_header  // stb's code is not held to the project's warning flags
#endif

#if defined(LEMEVIT_STB_IMAGE_EXTERNAL)
#include <stb/stb_image.h>
#else
#if defined(STBI_INCLUDE_STB_IMAGE_H)
#error "stb_image.h was included before lemevit/image; define LEMEVIT_STB_IMAGE_EXTERNAL to share it"
#endif
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
// PIL reads neither Radiance HDR nor Softimage PIC: no parity to keep, and
// less decoder code facing untrusted bytes.
#define STBI_NO_HDR
#define STBI_NO_PIC
#include <stb/stb_image.h>
#undef STB_IMAGE_IMPLEMENTATION
#endif
