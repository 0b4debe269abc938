#pragma once
// Shared by the fuzz targets: the invariant check and the data-derived random numbers
// that choose split points.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

// Not assert(): the replay build is a release build (NDEBUG). abort() is what libFuzzer
// reports as a crash, saving the input.
#define FUZZ_CHECK(cond)                                                                \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

namespace popgate::fuzz {

// Deterministic pseudo-random numbers derived from the input (xorshift seeded by FNV-1a),
// so a crash replays exactly from its saved input.
struct Rng {
  std::uint64_t state;
  Rng(std::string_view data, std::uint64_t seed) : state(seed) {
    for (unsigned char c : data) state = (state ^ c) * 0x100000001b3ULL;
    state |= 1;
  }
  std::uint64_t Next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  }
};

}  // namespace popgate::fuzz
