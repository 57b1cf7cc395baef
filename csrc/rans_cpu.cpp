#include "rans_cpu.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cstdlib>
#define NIC_AVX512_SEARCH 1
#endif

namespace nic {

namespace {

std::string table_error(size_t t, const std::string& what) {
  return "table " + std::to_string(t) + ": " + what;
}

void check_indexes(const Tables& tables, const int32_t* indexes, size_t n) {
  const int32_t count = static_cast<int32_t>(std::min<size_t>(tables.num_tables(), INT32_MAX));
  auto bad = [count](int32_t t) { return (t < 0) | (t >= count); };
  int any_bad = 0;  // a vectorisable pass; the culprit is only looked for on failure
  for (size_t i = 0; i < n; ++i) any_bad |= bad(indexes[i]);
  if (!any_bad) return;
  const size_t i = static_cast<size_t>(std::find_if(indexes, indexes + n, bad) - indexes);
  throw std::invalid_argument("table index " + std::to_string(indexes[i]) + " at position " +
                              std::to_string(i) + " is out of range [0, " +
                              std::to_string(count) + ")");
}

// The lockstep search of Tables::find_symbols: for every one of the LANES lanes, `steps`
// halving steps from at[l]. The lanes advance together: their steps are independent, which
// keeps the CPU busy where one lane alone would wait on a load -> compare -> select chain.
void search_scalar(const uint32_t* cdf, const uint32_t* slot, int steps, uint32_t* at) {
  for (uint32_t step = (1u << steps) >> 1; step > 0; step >>= 1) {
    // Arithmetic rather than ?: so that it compiles to a mask, not a coin-flip branch.
    for (int l = 0; l < LANES; ++l) at[l] += step & (0u - (cdf[at[l] + step] <= slot[l]));
  }
}

#ifdef NIC_AVX512_SEARCH
// The same with AVX-512: each step of 16 lanes is one gather, one compare, one masked move.
__attribute__((target("avx512f"))) void search_avx512(const uint32_t* cdf, const uint32_t* slot,
                                                      int steps, uint32_t* at) {
  static_assert(LANES == 32, "two vectors of 16 lanes");
  __m512i a0 = _mm512_loadu_si512(at), a1 = _mm512_loadu_si512(at + 16);
  const __m512i s0 = _mm512_loadu_si512(slot), s1 = _mm512_loadu_si512(slot + 16);
  for (uint32_t step = (1u << steps) >> 1; step > 0; step >>= 1) {
    const __m512i d = _mm512_set1_epi32(static_cast<int>(step));
    const __m512i i0 = _mm512_add_epi32(a0, d), i1 = _mm512_add_epi32(a1, d);
    const __m512i v0 = _mm512_i32gather_epi32(i0, cdf, 4), v1 = _mm512_i32gather_epi32(i1, cdf, 4);
    a0 = _mm512_mask_mov_epi32(a0, _mm512_cmple_epu32_mask(v0, s0), i0);
    a1 = _mm512_mask_mov_epi32(a1, _mm512_cmple_epu32_mask(v1, s1), i1);
  }
  _mm512_storeu_si512(at, a0);
  _mm512_storeu_si512(at + 16, a1);
}

// NIC_RANS_SCALAR=1 forces the portable search (the tests compare the two).
const bool USE_AVX512 = __builtin_cpu_supports("avx512f") && !std::getenv("NIC_RANS_SCALAR");
#endif

void search(const uint32_t* cdf, const uint32_t* slot, int steps, uint32_t* at) {
#ifdef NIC_AVX512_SEARCH
  if (USE_AVX512) return search_avx512(cdf, slot, steps, at);
#endif
  search_scalar(cdf, slot, steps, at);
}

// The encoding side of one stream: LANES states plus the words emitted so far, which come out
// in reverse read order because encoding runs backwards.
class Encoder {
 public:
  Encoder() { std::fill(x_, x_ + LANES, RANS_L); }

  void encode_segment(const Tables& tables, const Segment& seg);
  std::vector<uint8_t> bytes() const;

 private:
  // The word is always stored and kept only if needed: no data-dependent branch. The caller
  // has reserved room for it.
  void put(int lane, uint32_t start, uint32_t freq) {
    const uint32_t x = x_[lane], need = enc_needs_word(x, freq);
    words_[num_words_] = enc_word(x);
    num_words_ += need;
    x_[lane] = enc_put(enc_shed(x, need), start, freq);
  }
  void put_uniform(int lane, uint32_t value, int k) {
    put(lane, uniform_start(value, k), uniform_freq(k));
  }

  uint32_t x_[LANES];
  std::vector<uint16_t> words_;  // the first num_words_ are real
  size_t num_words_ = 0;
};

void Encoder::encode_segment(const Tables& tables, const Segment& seg) {
  // What each lane of a group codes, gathered first because the phases replay lane-reversed.
  uint32_t start[LANES], freq[LANES];
  uint64_t u[LANES];
  int nbits[LANES], escaped[LANES];
  for (size_t g = (seg.n + LANES - 1) / LANES; g-- > 0;) {
    const size_t base = g * LANES;
    const int active = static_cast<int>(std::min<size_t>(LANES, seg.n - base));
    // At most one word per symbol: main, length and up to MAX_CHUNKS chunks per lane.
    const size_t room = num_words_ + LANES * (2 + MAX_CHUNKS);
    if (words_.size() < room) words_.resize(2 * room);
    int num_escaped = 0;
    for (int l = 0; l < active; ++l) {
      const int32_t t = seg.indexes[base + l], v = seg.values[base + l];
      const int32_t n = tables.size(t), offset = tables.offset(t);
      const int64_t s = static_cast<int64_t>(v) - offset;
      const bool regular = s >= 0 && s < n - 1;
      const uint32_t* c = tables.cdf(t) + (regular ? s : n - 1);
      start[l] = c[0];
      freq[l] = c[1] - c[0];
      if (!regular) {
        escaped[num_escaped++] = l;
        u[l] = escape_u(v, offset, n);
        nbits[l] = bit_length(u[l]);
      }
    }
    // The decoder's phases backwards: chunks (last first), escape lengths, main symbols.
    for (int j = MAX_CHUNKS; j-- > 0;) {
      for (int e = num_escaped; e-- > 0;) {
        const int l = escaped[e];
        if (nbits[l] <= CHUNK_BITS * j) continue;
        const int k = std::min(CHUNK_BITS, nbits[l] - CHUNK_BITS * j);
        put_uniform(l, static_cast<uint32_t>(u[l] >> (CHUNK_BITS * j)) & ((1u << k) - 1), k);
      }
    }
    for (int e = num_escaped; e-- > 0;) {
      put_uniform(escaped[e], static_cast<uint32_t>(nbits[escaped[e]]), NBITS_BITS);
    }
    for (int l = active; l-- > 0;) put(l, start[l], freq[l]);
  }
}

std::vector<uint8_t> Encoder::bytes() const {
  std::vector<uint8_t> out(HEADER_BYTES + 2 * num_words_);
  uint8_t* p = out.data();
  for (uint32_t x : x_) {
    for (int b = 0; b < 4; ++b) *p++ = static_cast<uint8_t>(x >> (8 * b));
  }
  for (size_t i = num_words_; i-- > 0;) {
    *p++ = static_cast<uint8_t>(words_[i]);
    *p++ = static_cast<uint8_t>(words_[i] >> 8);
  }
  return out;
}

}  // namespace

Tables::Tables(const int32_t* cdfs, size_t num_tables, size_t width, const int32_t* sizes,
               const int32_t* offsets)
    : sizes_(sizes, sizes + num_tables), offsets_(offsets, offsets + num_tables) {
  if (num_tables == 0) throw std::invalid_argument("need at least one table");
  for (size_t t = 0; t < num_tables; ++t) {
    const int32_t n = sizes[t];
    if (n < 2 || static_cast<size_t>(n) >= width) {
      throw std::invalid_argument(table_error(
          t, "size " + std::to_string(n) + " must be in [2, " + std::to_string(width) +
                 ") (a regular symbol plus ESCAPE at least; the row holds size + 1 cdf values)"));
    }
    const int32_t* row = cdfs + t * width;
    if (row[0] != 0 || row[n] != static_cast<int32_t>(PREC_TOTAL)) {
      throw std::invalid_argument(
          table_error(t, "cdf must run from 0 to " + std::to_string(PREC_TOTAL)));
    }
    for (int32_t s = 0; s < n; ++s) {
      if (row[s + 1] <= row[s]) {
        throw std::invalid_argument(table_error(
            t, "cdf must be strictly increasing (symbol " + std::to_string(s) + " has freq <= 0)"));
      }
    }
    // The decoder outputs offset + s for regular symbols, so those must be valid int32 values.
    if (static_cast<int64_t>(offsets[t]) + n - 2 > INT32_MAX) {
      throw std::invalid_argument(table_error(t, "offset + size - 2 exceeds int32"));
    }
  }
  // The bucket of a slot narrows its symbol down to at most span + 1 candidates; the search
  // then takes steps_ halving steps for every table (see find_symbols).
  lut_.resize(num_tables << LUT_BITS);
  uint32_t span = 0;
  for (size_t t = 0; t < num_tables; ++t) {
    const int32_t* row = cdfs + t * width;
    uint32_t s = 0;
    for (uint32_t b = 0; b < (1u << LUT_BITS); ++b) {
      const uint32_t first = b << BUCKET_BITS, last = first + (1u << BUCKET_BITS) - 1;
      while (static_cast<uint32_t>(row[s + 1]) <= first) ++s;
      lut_[(t << LUT_BITS) + b] = static_cast<uint16_t>(s);
      uint32_t e = s;
      while (static_cast<uint32_t>(row[e + 1]) <= last) ++e;
      span = std::max(span, e - s);
    }
  }
  while ((1u << steps_) <= span) ++steps_;
  // Valid rows are strictly increasing from 0 to 2^16, so sizes are at most 2^16 and the
  // search reads at most 2^steps_ - 1 entries past a row's last symbol.
  row_len_ = static_cast<size_t>(*std::max_element(sizes, sizes + num_tables)) + (1u << steps_);
  if (num_tables * row_len_ >= (1u << 31)) {
    throw std::invalid_argument("too many or too large tables (2^31 cdf entries at most)");
  }
  cdf_.assign(num_tables * row_len_, PREC_TOTAL);
  for (size_t t = 0; t < num_tables; ++t) {
    std::copy(cdfs + t * width, cdfs + t * width + sizes[t] + 1, cdf_.begin() + t * row_len_);
  }
}

void Tables::find_symbols(const int32_t* t, const uint32_t* slot, int active, uint32_t* s) const {
  // Positions in cdf_ (below 2^31, see the constructor), so that each step is one indexed
  // load from a single base: a gather in the vector search. Lanes past `active` search table 0
  // for slot 0, harmlessly, so that the search always runs over LANES lanes.
  uint32_t at[LANES] = {}, row[LANES], key[LANES] = {};
  for (int l = 0; l < active; ++l) {
    const size_t bucket = (static_cast<size_t>(t[l]) << LUT_BITS) + (slot[l] >> BUCKET_BITS);
    row[l] = static_cast<uint32_t>(t[l] * row_len_);
    key[l] = slot[l];
    at[l] = row[l] + lut_[bucket];
  }
  search(cdf_.data(), key, steps_, at);
  for (int l = 0; l < active; ++l) s[l] = at[l] - row[l];
}

void check_segments(const Tables& tables, const std::vector<Segment>& segments) {
  for (size_t j = 0; j < segments.size(); ++j) {
    try {
      check_indexes(tables, segments[j].indexes, segments[j].n);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("segment " + std::to_string(j) + ": " + e.what());
    }
  }
}

std::vector<uint8_t> encode_stream(const Tables& tables, const std::vector<Segment>& segments) {
  check_segments(tables, segments);
  Encoder enc;
  for (auto seg = segments.rbegin(); seg != segments.rend(); ++seg) {
    enc.encode_segment(tables, *seg);
  }
  return enc.bytes();
}

Decoder::Decoder(std::shared_ptr<const Tables> tables, std::vector<uint8_t> data)
    : tables_(std::move(tables)), data_(std::move(data)) {
  if (data_.size() < HEADER_BYTES) throw CorruptStream(kTooShort);
  if (data_.size() % 2) throw CorruptStream(kOddLength);
  num_words_ = (data_.size() - HEADER_BYTES) / 2;
  data_.resize(data_.size() + 2);  // see advance()
  for (int l = 0; l < LANES; ++l) {
    const uint8_t* p = data_.data() + 4 * l;
    x_[l] = p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24;
    if (x_[l] < RANS_L) {
      throw CorruptStream(kBadInitialState, "lane " + std::to_string(l));
    }
  }
}

// The word at pos_ is loaded even when it is not needed (the zero padding after the data makes
// that safe) so that renormalisation has no data-dependent branch.
inline void Decoder::advance(int lane, uint32_t start, uint32_t freq) {
  const uint32_t x = dec_advance(x_[lane], start, freq);
  const uint32_t need = dec_needs_word(x);
  if (pos_ + need > num_words_) throw CorruptStream(kReadPastEnd);
  const uint8_t* p = data_.data() + HEADER_BYTES + 2 * pos_;
  x_[lane] = dec_shift_in(x, p[0] | p[1] << 8, need);
  pos_ += need;
}

void Decoder::decode(const int32_t* indexes, int32_t* out, size_t n) {
  if (failed_) throw CorruptStream(kAlreadyFailed);
  check_indexes(*tables_, indexes, n);
  failed_ = true;  // stays set if anything below throws
  const Tables& tables = *tables_;
  int escaped[LANES], nbits[LANES];
  uint64_t u[LANES];
  for (size_t base = 0; base < n; base += LANES) {
    const int active = static_cast<int>(std::min<size_t>(LANES, n - base));
    int num_escaped = 0;
    // Phase A: the main symbol of every lane.
    uint32_t slot[LANES], sym[LANES];
    for (int l = 0; l < active; ++l) slot[l] = dec_slot(x_[l]);
    tables.find_symbols(indexes + base, slot, active, sym);
    for (int l = 0; l < active; ++l) {
      const int32_t t = indexes[base + l], s = static_cast<int32_t>(sym[l]);
      const uint32_t* cdf = tables.cdf(t);
      advance(l, cdf[s], cdf[s + 1] - cdf[s]);
      if (s == tables.size(t) - 1) {
        escaped[num_escaped++] = l;
      } else {
        out[base + l] = tables.offset(t) + s;
      }
    }
    // Phase B: the bit length of every escaped lane's u.
    for (int e = 0; e < num_escaped; ++e) {
      const int l = escaped[e];
      nbits[l] = static_cast<int>(uniform_value(dec_slot(x_[l]), NBITS_BITS));
      advance(l, uniform_start(nbits[l], NBITS_BITS), uniform_freq(NBITS_BITS));
      if (nbits[l] > MAX_ESCAPE_BITS) throw CorruptStream(kEscapeTooLong);
      u[l] = 0;
    }
    // Phases C_j: 16-bit chunks of u, least significant first.
    for (int j = 0; j < MAX_CHUNKS; ++j) {
      for (int e = 0; e < num_escaped; ++e) {
        const int l = escaped[e];
        if (nbits[l] <= CHUNK_BITS * j) continue;
        const int k = std::min(CHUNK_BITS, nbits[l] - CHUNK_BITS * j);
        const uint32_t b = uniform_value(dec_slot(x_[l]), k);
        advance(l, uniform_start(b, k), uniform_freq(k));
        u[l] |= static_cast<uint64_t>(b) << (CHUNK_BITS * j);
      }
    }
    for (int e = 0; e < num_escaped; ++e) {
      const int l = escaped[e];
      const int32_t t = indexes[base + l];
      // The encoder always sends the exact bit length, so a leading zero bit means corruption.
      if (bit_length(u[l]) != nbits[l]) {
        throw CorruptStream(kEscapeLengthMismatch);
      }
      if (!escape_value(u[l], tables.offset(t), tables.size(t), &out[base + l])) {
        throw CorruptStream(kEscapeOutOfRange);
      }
    }
  }
  failed_ = false;
}

void Decoder::finish() const {
  if (failed_) throw CorruptStream(kAlreadyFailed);
  if (pos_ != num_words_) {
    throw CorruptStream(kWordsLeft, std::to_string(num_words_ - pos_) + " words");
  }
  for (int l = 0; l < LANES; ++l) {
    if (x_[l] != RANS_L) {
      throw CorruptStream(kBadFinalState, "lane " + std::to_string(l));
    }
  }
}

}  // namespace nic
