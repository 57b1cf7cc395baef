// State transitions of nicengine's interleaved rANS coder (bitstream: docs/CODER.md).
//
// Header-only and free of the STL and exceptions so that the CPU coder and a CUDA coder share
// exactly these integer operations and therefore produce identical bytes.
#pragma once

#include <stdint.h>

#ifdef __CUDACC__
#define NIC_HD __host__ __device__
#else
#define NIC_HD
#endif

namespace nic {

constexpr int LANES = 32;                  // interleaved states per stream
constexpr int PREC_BITS = 16;              // probabilities are freq / 2^16
constexpr uint32_t PREC_TOTAL = 1u << PREC_BITS;
constexpr int WORD_BITS = 16;              // renormalisation moves one 16-bit word
constexpr uint32_t RANS_L = 1u << 16;      // states live in [RANS_L, 2^32)
constexpr int NBITS_BITS = 6;              // escape length is a uniform 6-bit symbol
constexpr int CHUNK_BITS = 16;             // escape payload is sent in chunks of up to 16 bits
constexpr int MAX_ESCAPE_BITS = 40;        // longer lengths are rejected as corrupt
constexpr int MAX_CHUNKS = (MAX_ESCAPE_BITS + CHUNK_BITS - 1) / CHUNK_BITS;
constexpr int HEADER_BYTES = 4 * LANES;    // a stream starts with the final encoder states

// Renormalisation moves at most one word per coding step. Both directions are written without
// a branch on whether it moves, which is a coin flip for high-entropy symbols: the `need`
// functions return 0 or 1 and the callers use that as a count.

// ---- encoder (runs backwards: the last symbol decoded is encoded first) ----

// x must shed its low word (enc_word) before coding freq if it would otherwise reach 2^32.
// With RANS_L == 2^PREC_BITS the bound is freq << 16; this needs freq < 2^16, which every
// symbol has (tables have at least two symbols, uniform symbols at least one bit).
NIC_HD inline uint32_t enc_needs_word(uint32_t x, uint32_t freq) {
  return x >= (freq << WORD_BITS);
}
NIC_HD inline uint16_t enc_word(uint32_t x) { return (uint16_t)(x & 0xffffu); }
NIC_HD inline uint32_t enc_shed(uint32_t x, uint32_t need) { return x >> (WORD_BITS * need); }

// Codes a symbol occupying [start, start + freq) of the 2^16 range; x is already renormalised.
NIC_HD inline uint32_t enc_put(uint32_t x, uint32_t start, uint32_t freq) {
  return ((x / freq) << PREC_BITS) + (x % freq) + start;
}

// ---- decoder ----

// The slot selects the symbol s with cdf[s] <= slot < cdf[s + 1].
NIC_HD inline uint32_t dec_slot(uint32_t x) { return x & (PREC_TOTAL - 1); }

// Removes the symbol [start, start + freq) that dec_slot(x) selected.
NIC_HD inline uint32_t dec_advance(uint32_t x, uint32_t start, uint32_t freq) {
  return freq * (x >> PREC_BITS) + dec_slot(x) - start;
}

// After dec_advance a state is >= 1, so one word always brings it back to [RANS_L, 2^32).
NIC_HD inline uint32_t dec_needs_word(uint32_t x) { return x < RANS_L; }
// Appends word below x if need (the next word of the stream), else returns x.
NIC_HD inline uint32_t dec_shift_in(uint32_t x, uint32_t word, uint32_t need) {
  return (x << (WORD_BITS * need)) | (word & (0u - need));
}

// ---- uniform k-bit symbols (1 <= k <= 16): exact, no table needed ----

NIC_HD inline uint32_t uniform_start(uint32_t value, int k) { return value << (PREC_BITS - k); }
NIC_HD inline uint32_t uniform_freq(int k) { return 1u << (PREC_BITS - k); }
NIC_HD inline uint32_t uniform_value(uint32_t slot, int k) { return slot >> (PREC_BITS - k); }

// ---- escapes: values outside [offset, offset + n - 1) ----
// Values above the regular range map to even u, values below to odd u, so u grows with the
// distance from the range and both sides share one variable-length code. 64-bit throughout: the
// distance of two int32 values needs 33 bits.

// u of an escaped value v (one outside the regular range) of a table with n symbols.
NIC_HD inline uint64_t escape_u(int32_t v, int32_t offset, int32_t n) {
  const int64_t hi = (int64_t)offset + n - 1;
  return v >= hi ? 2 * (uint64_t)(v - hi) : 2 * (uint64_t)((int64_t)offset - 1 - v) + 1;
}

// Number of significant bits of u (0 for u == 0).
NIC_HD inline int bit_length(uint64_t u) {
  int n = 0;
  for (; u; u >>= 1) ++n;
  return n;
}

// Inverse of escape_u for u < 2^MAX_ESCAPE_BITS; false if the value does not fit int32.
NIC_HD inline bool escape_value(uint64_t u, int32_t offset, int32_t n, int32_t* v) {
  const int64_t half = (int64_t)(u >> 1);
  const int64_t r = (u & 1) ? (int64_t)offset - 1 - half : (int64_t)offset + n - 1 + half;
  if (r < INT32_MIN || r > INT32_MAX) return false;
  *v = (int32_t)r;
  return true;
}

}  // namespace nic
