#pragma once
// The instruction-set extensions of the running CPU. A model checks the ones
// its backend was compiled for when it is loaded, so that a program built for
// more than the CPU offers stops with an error naming what is missing instead
// of dying of SIGILL in the middle of a forward pass.
//
// LEMEVIT_CPU_HIDE=feature,feature... makes features look absent (tests use
// it to prove the check; it cannot make a missing feature present).
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <string_view>

#include "lemevit/error.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace lemevit::cpu {

// Names as in /proc/cpuinfo: avx2, fma, avx512f, avx512cd, avx512dq,
// avx512bw, avx512_bf16, avx512_vnni, avx_vnni; on aarch64 asimddp (dot product), bf16
// and i8mm.
inline bool detected(std::string_view f) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  __builtin_cpu_init();
  if (f == "avx2") return __builtin_cpu_supports("avx2");
  if (f == "fma") return __builtin_cpu_supports("fma");
  if (f == "avx512f") return __builtin_cpu_supports("avx512f");
  if (f == "avx512cd") return __builtin_cpu_supports("avx512cd");
  if (f == "avx512dq") return __builtin_cpu_supports("avx512dq");
  if (f == "avx512bw") return __builtin_cpu_supports("avx512bw");
  if (f == "avx512_bf16") return __builtin_cpu_supports("avx512bf16");
  if (f == "avx512_vnni") return __builtin_cpu_supports("avx512vnni");
  if (f == "avx_vnni") {  // CPUID.(7,1):EAX[4]; GCC 12's __builtin_cpu_supports misses it
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __builtin_cpu_supports("avx2") && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 4 & 1);
  }
#elif defined(__aarch64__) && defined(__linux__)
  if (f == "asimddp") return getauxval(AT_HWCAP) & HWCAP_ASIMDDP;
  if (f == "bf16") return getauxval(AT_HWCAP2) & HWCAP2_BF16;
  if (f == "i8mm") return getauxval(AT_HWCAP2) & HWCAP2_I8MM;
#else
  (void)f;  // no check written for this architecture yet
#endif
  return false;
}

inline bool hidden(std::string_view f) {
  const char* env = std::getenv("LEMEVIT_CPU_HIDE");
  std::string_view list = env ? env : "";
  while (!list.empty()) {
    const auto comma = list.find(',');
    if (list.substr(0, comma) == f) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

inline bool has(std::string_view f) { return !hidden(f) && detected(f); }

// Throws lemevit::Error naming every feature of `features` the CPU lacks,
// then the sentence `remedy` (what the user can do about it).
inline void require(std::initializer_list<std::string_view> features, std::string_view built_for,
                    std::string_view remedy) {
  std::string missing;
  for (auto f : features)
    if (!has(f)) (missing += missing.empty() ? "" : ", ") += f;
  if (!missing.empty())
    throw Error(std::string(built_for) + " was compiled for CPU features this CPU lacks: " + missing + ". " +
                std::string(remedy));
}

}  // namespace lemevit::cpu
