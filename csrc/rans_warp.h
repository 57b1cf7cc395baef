// Warp-parallel coding of many rANS streams (bitstream: docs/CODER.md; design:
// docs/CUDA_CODER.md). Shared by the CUDA kernels (rans_cuda.cu) and their host emulation
// (rans_host_emulation.cpp), which CI checks byte for byte against the CPU coder.
//
// One warp codes one stream, lane l holding state l. The algorithm is written once against a
// warp type W whose lanes run per-lane steps and whose only cross-lane operation is an exclusive
// prefix count of a 0/1 flag:
//   w.each(f)  calls f(l, lane) with the index l and the state `lane` of each lane (on the
//              device: this thread's lane; on the host: all 32 in turn)
//   w.scan()   sets each lane's `rank` to the number of lower lanes whose `flag` is 1 and returns
//              the number of lanes whose `flag` is 1 (the same total on every lane)
// scan() is only called at warp-uniform points: loop bounds and early exits depend on scan
// totals and per-stream scalars alone, never on one lane's data.
#pragma once

#include "rans_core.h"
#include "rans_status.h"  // the per-stream status codes (kOk ..)

struct CUstream_st;  // cudaStream_t is CUstream_st*; this header does not need the CUDA headers

#ifdef __CUDACC__
#define NIC_WARP __device__ __forceinline__
#else
#define NIC_WARP inline
#endif

namespace nic {
namespace warp {

// Each value codes at most 5 symbols (main, escape length, 3 chunks: an int32 escape has at most
// 33 bits) and each symbol moves at most one word, so 5 words per value bound a stream's words.
constexpr int MAX_WORDS_PER_VALUE = 2 + MAX_CHUNKS;

// ---- tables ----
// The kernels read all tables from one blob (built by engine.coder.pack_tables): `count`
// TableInfo entries, then every row's cdf[0..size) as uint16 (cdf[size] = 2^16 is implied; all
// other entries are below 2^16 since the cdf increases strictly). 16-byte units, so that it can
// be copied to shared memory with vector loads.
struct alignas(16) TableInfo {
  int32_t row;     // where cdf[0] is, in uint16 entries after the TableInfo array
  int32_t size;    // symbols, ESCAPE (the last) included
  int32_t offset;  // value of symbol 0
  int32_t unused;
};

struct TableView {
  const TableInfo* info;
  const uint16_t* cdf;
  int32_t count;
};

NIC_HD inline TableView table_view(const void* blob, int32_t count) {
  const TableInfo* info = static_cast<const TableInfo*>(blob);
  return {info, reinterpret_cast<const uint16_t*>(info + count), count};
}

NIC_HD inline uint32_t cdf_at(const uint16_t* cdf, int32_t size, int32_t s) {
  return s < size ? cdf[s] : PREC_TOTAL;
}

// Largest s with cdf[s] <= slot (the CPU coder's search; reads cdf[0..size) only).
NIC_HD inline int32_t find_symbol(const uint16_t* cdf, int32_t size, uint32_t slot) {
  int32_t lo = 0;
  for (int32_t len = size; len > 1;) {
    const int32_t half = len / 2;
    lo = cdf[lo + half] <= slot ? lo + half : lo;
    len -= half;
  }
  return lo;
}

// Bits of escape chunk j of an nbits-long u (> 0 only for the chunks that exist).
NIC_HD inline int chunk_bits(int nbits, int j) {
  const int k = nbits - CHUNK_BITS * j;
  return k < CHUNK_BITS ? k : CHUNK_BITS;
}

NIC_HD inline uint32_t load_u32_le(const uint8_t* p) {
  return p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24;
}

// Streams are read bytewise: a batch may hold odd-length (corrupt) streams, so later ones can
// start at odd addresses.
NIC_HD inline uint32_t load_word(const uint8_t* words, int64_t i) {
  return words[2 * i] | words[2 * i + 1] << 8;
}

// ---- launch arguments (device pointers for the kernels, host pointers for the emulation) ----

struct EncodeArgs {
  const int32_t* values;           // every segment's values, back to back
  const int32_t* indexes;          // and their table indexes
  const int64_t* seg_start;        // segment g is values[seg_start[g] .. seg_start[g] + seg_len[g])
  const int64_t* seg_len;
  const int64_t* stream_segs;      // stream s codes segments stream_segs[s] .. stream_segs[s + 1]-1
  const int64_t* scratch_offsets;  // stream s owns scratch[scratch_offsets[s] .. [s + 1])
  uint16_t* scratch;               // words, written backwards from the end of each region
  uint32_t* states;                // [streams][LANES]: final encoder states
  int64_t* word_start;             // stream s's words are scratch[word_start[s] .. region end)
  int32_t* status;                 // kOk or kBadTableIndex
};

struct CompactArgs {
  const uint32_t* states;
  const uint16_t* scratch;
  const int64_t* scratch_offsets;
  const int64_t* word_start;
  const int64_t* out_offsets;  // stream s's bytes go to out[out_offsets[s] .. [s + 1])
  uint8_t* out;
};

struct DecodeArgs {
  const uint8_t* data;      // stream s is data[offsets[s] .. offsets[s + 1])
  const int64_t* offsets;
  const int32_t* indexes;   // this launch's segment of stream s: indexes[seg_start[s] ..] and
  const int64_t* seg_start;  // out[seg_start[s] ..], seg_len[s] values (0: stream not advanced)
  const int64_t* seg_len;
  int32_t* out;
  uint32_t* states;         // [streams][LANES], between launches
  int64_t* pos;             // next word to read
  int32_t* status;          // sticky once a stream is found corrupt
};

// ---- per-lane state ----

struct EncodeLane {
  uint32_t x;
  int32_t next_value, next_index;  // the next group's, loaded ahead to hide memory latency
  bool active, escaped;            // this group's value
  int nbits;
  uint64_t u;
  uint32_t start, freq;            // its main symbol
  bool codes;                      // this phase: does the lane code (sym_start, sym_freq)?
  uint32_t sym_start, sym_freq;
  uint32_t flag, rank;             // scan() input and output
};

struct DecodeLane {
  uint32_t x;
  int32_t next_index;
  bool active, escaped;
  int nbits;
  uint64_t u;
  int32_t value, offset, size;
  uint32_t flag, rank;
};

// ---- encoding ----

// Codes every lane's (sym_start, sym_freq) where `codes`; the words the lanes shed go below top,
// lower lanes lower, which is the decoder's read order.
template <class W>
NIC_WARP void put_phase(W& w, uint16_t* words, int64_t& top) {
  w.each([&](int, EncodeLane& lane) {
    lane.flag = lane.codes && enc_needs_word(lane.x, lane.sym_freq);
  });
  const uint32_t total = w.scan();
  w.each([&](int, EncodeLane& lane) {
    if (lane.flag) words[top - total + lane.rank] = enc_word(lane.x);
    if (lane.codes) lane.x = enc_put(enc_shed(lane.x, lane.flag), lane.sym_start, lane.sym_freq);
  });
  top -= total;
}

// Encodes one segment of n values (groups last to first, phases C_2 .. C_0, B, A), moving top
// down over the words written.
template <class W>
NIC_WARP int32_t encode_segment(W& w, const TableView& tv, const int32_t* values,
                                const int32_t* indexes, int64_t n, uint16_t* words,
                                int64_t& top) {
  int64_t base = (n + LANES - 1) / LANES * LANES;
  auto prefetch = [&](int l, EncodeLane& lane) {  // the group below base
    const int64_t i = base - LANES + l;
    const bool ok = base > 0 && i < n;
    lane.next_value = ok ? values[i] : 0;
    lane.next_index = ok ? indexes[i] : 0;
  };
  w.each(prefetch);
  while (base > 0) {
    base -= LANES;
    w.each([&](int l, EncodeLane& lane) {
      const int32_t v = lane.next_value, t = lane.next_index;
      prefetch(l, lane);
      lane.active = base + l < n;
      lane.flag = static_cast<uint32_t>(t) >= static_cast<uint32_t>(tv.count);
      const TableInfo ti = tv.info[lane.flag ? 0 : t];
      const int64_t s = static_cast<int64_t>(v) - ti.offset;
      const bool regular = s >= 0 && s < ti.size - 1;
      const uint16_t* cdf = tv.cdf + ti.row;
      const int32_t sym = regular ? static_cast<int32_t>(s) : ti.size - 1;
      lane.start = cdf[sym];
      lane.freq = cdf_at(cdf, ti.size, sym + 1) - lane.start;
      lane.escaped = lane.active && !regular;
      lane.u = lane.escaped ? escape_u(v, ti.offset, ti.size) : 0;
      lane.nbits = bit_length(lane.u);
    });
    if (w.scan()) return kBadTableIndex;
    w.each([](int, EncodeLane& lane) { lane.flag = lane.escaped; });
    if (w.scan()) {  // escape data, in the few groups that have any
      for (int j = MAX_CHUNKS; j-- > 0;) {
        w.each([&](int, EncodeLane& lane) {
          const int k = chunk_bits(lane.nbits, j);
          lane.codes = lane.escaped && k > 0;
          if (!lane.codes) return;
          const uint32_t b = static_cast<uint32_t>(lane.u >> (CHUNK_BITS * j)) & ((1u << k) - 1);
          lane.sym_start = uniform_start(b, k);
          lane.sym_freq = uniform_freq(k);
        });
        put_phase(w, words, top);
      }
      w.each([](int, EncodeLane& lane) {
        lane.codes = lane.escaped;
        lane.sym_start = uniform_start(static_cast<uint32_t>(lane.nbits), NBITS_BITS);
        lane.sym_freq = uniform_freq(NBITS_BITS);
      });
      put_phase(w, words, top);
    }
    w.each([](int, EncodeLane& lane) {
      lane.codes = lane.active;
      lane.sym_start = lane.start;
      lane.sym_freq = lane.freq;
    });
    put_phase(w, words, top);
  }
  return kOk;
}

// Encodes stream `stream` (its segments last to first) into its scratch region and records its
// states, where its words start and its status.
template <class W>
NIC_WARP void encode_one(W& w, const TableView& tv, const EncodeArgs& a, int64_t stream) {
  const int64_t end = a.scratch_offsets[stream + 1];
  int64_t top = end;
  int32_t status = kOk;
  w.each([](int, EncodeLane& lane) { lane.x = RANS_L; });
  for (int64_t g = a.stream_segs[stream + 1]; status == kOk && g > a.stream_segs[stream];) {
    --g;
    status = encode_segment(w, tv, a.values + a.seg_start[g], a.indexes + a.seg_start[g],
                            a.seg_len[g], a.scratch, top);
  }
  if (status != kOk) top = end;  // no words, so that compaction stays inside the region
  w.each([&](int l, EncodeLane& lane) {
    a.states[stream * LANES + l] = lane.x;
    if (l == 0) {
      a.word_start[stream] = top;
      a.status[stream] = status;
    }
  });
}

// Bytes of an encoded stream: the header and the words.
NIC_HD inline int64_t encoded_bytes(const CompactArgs& a, int64_t stream) {
  return HEADER_BYTES + 2 * (a.scratch_offsets[stream + 1] - a.word_start[stream]);
}

// Element i of stream `stream`'s bytes read as little-endian 16-bit units: the 64 halves of the
// 32 states, then the words.
NIC_HD inline uint16_t encoded_element(const CompactArgs& a, int64_t stream, int64_t i) {
  if (i < 2 * LANES) {
    const uint32_t x = a.states[stream * LANES + i / 2];
    return static_cast<uint16_t>(i % 2 ? x >> 16 : x & 0xffffu);
  }
  return a.scratch[a.word_start[stream] + i - 2 * LANES];
}

// ---- decoding ----

// Appends a word to every lane whose flag is set, read at pos + rank; false (nothing read) if the
// data ends first.
template <class W>
NIC_WARP bool get_words(W& w, const uint8_t* words, int64_t num_words, int64_t& pos) {
  const uint32_t total = w.scan();
  if (pos + total > num_words) return false;
  w.each([&](int, DecodeLane& lane) {
    if (lane.flag) lane.x = dec_shift_in(lane.x, load_word(words, pos + lane.rank), 1);
  });
  pos += total;
  return true;
}

// Decodes one segment of n values into out; pos is the next word. Stops at the first error.
template <class W>
NIC_WARP int32_t decode_segment(W& w, const TableView& tv, const int32_t* indexes, int32_t* out,
                                int64_t n, const uint8_t* words, int64_t num_words,
                                int64_t& pos) {
  int64_t base = 0;
  auto prefetch = [&](int l, DecodeLane& lane) {  // the group at base
    lane.next_index = base + l < n ? indexes[base + l] : 0;
  };
  w.each(prefetch);
  for (; base < n;) {
    const int64_t group = base;
    base += LANES;
    // Phase A: main symbols. A bad table index is looked up in table 0 (in bounds) and
    // reported before anything is stored.
    w.each([&](int l, DecodeLane& lane) {
      const int32_t t = lane.next_index;
      prefetch(l, lane);
      lane.active = group + l < n;
      lane.escaped = false;
      lane.flag = static_cast<uint32_t>(t) >= static_cast<uint32_t>(tv.count);
      if (!lane.active) return;
      const TableInfo ti = tv.info[lane.flag ? 0 : t];
      const uint16_t* cdf = tv.cdf + ti.row;
      const int32_t sym = find_symbol(cdf, ti.size, dec_slot(lane.x));
      const uint32_t start = cdf[sym];
      lane.x = dec_advance(lane.x, start, cdf_at(cdf, ti.size, sym + 1) - start);
      lane.escaped = sym == ti.size - 1;
      lane.value = static_cast<int32_t>(static_cast<uint32_t>(ti.offset) + sym);  // if regular
      lane.offset = ti.offset;
      lane.size = ti.size;
    });
    if (w.scan()) return kBadTableIndex;
    w.each([](int, DecodeLane& lane) { lane.flag = dec_needs_word(lane.x); });  // inactive: x >= L
    if (!get_words(w, words, num_words, pos)) return kReadPastEnd;
    w.each([](int, DecodeLane& lane) { lane.flag = lane.escaped; });
    if (w.scan()) {
      // Phase B: escape lengths.
      w.each([](int, DecodeLane& lane) {
        lane.flag = 0;
        if (!lane.escaped) return;
        lane.nbits = static_cast<int>(uniform_value(dec_slot(lane.x), NBITS_BITS));
        lane.x = dec_advance(lane.x, uniform_start(static_cast<uint32_t>(lane.nbits), NBITS_BITS),
                             uniform_freq(NBITS_BITS));
        lane.flag = dec_needs_word(lane.x);
        lane.u = 0;
      });
      if (!get_words(w, words, num_words, pos)) return kReadPastEnd;
      w.each([](int, DecodeLane& lane) {
        lane.flag = lane.escaped && lane.nbits > MAX_ESCAPE_BITS;
      });
      if (w.scan()) return kEscapeTooLong;
      // Phases C_j: chunks of u, least significant first.
      for (int j = 0; j < MAX_CHUNKS; ++j) {
        w.each([&](int, DecodeLane& lane) {
          lane.flag = 0;
          const int k = chunk_bits(lane.nbits, j);
          if (!lane.escaped || k <= 0) return;
          const uint32_t b = uniform_value(dec_slot(lane.x), k);
          lane.x = dec_advance(lane.x, uniform_start(b, k), uniform_freq(k));
          lane.flag = dec_needs_word(lane.x);
          lane.u |= static_cast<uint64_t>(b) << (CHUNK_BITS * j);
        });
        if (!get_words(w, words, num_words, pos)) return kReadPastEnd;
      }
      // The encoder sends the exact bit length, so a leading zero bit means corruption.
      w.each([](int, DecodeLane& lane) {
        lane.flag = lane.escaped && bit_length(lane.u) != lane.nbits;
      });
      if (w.scan()) return kEscapeLengthMismatch;
      w.each([](int, DecodeLane& lane) {
        lane.flag = lane.escaped && !escape_value(lane.u, lane.offset, lane.size, &lane.value);
      });
      if (w.scan()) return kEscapeOutOfRange;
    }
    w.each([&](int l, DecodeLane& lane) {
      if (lane.active) out[group + l] = lane.value;
    });
  }
  return kOk;
}

// Checks stream `stream`'s length and header and loads its initial states.
template <class W>
NIC_WARP void open_one(W& w, const DecodeArgs& a, int64_t stream) {
  const uint8_t* data = a.data + a.offsets[stream];
  const int64_t length = a.offsets[stream + 1] - a.offsets[stream];
  int32_t status = length < HEADER_BYTES ? kTooShort : length % 2 ? kOddLength : kOk;
  w.each([&](int l, DecodeLane& lane) {
    lane.x = status == kOk ? load_u32_le(data + 4 * l) : RANS_L;
    lane.flag = lane.x < RANS_L;
  });
  if (w.scan()) status = kBadInitialState;
  w.each([&](int l, DecodeLane& lane) {
    a.states[stream * LANES + l] = lane.x;
    if (l == 0) {
      a.pos[stream] = 0;
      a.status[stream] = status;
    }
  });
}

// Decodes this launch's segment of stream `stream`, unless it is empty or the stream failed.
template <class W>
NIC_WARP void decode_one(W& w, const TableView& tv, const DecodeArgs& a, int64_t stream) {
  const int64_t n = a.seg_len[stream];
  if (a.status[stream] != kOk || n == 0) return;
  const int64_t begin = a.offsets[stream];
  const int64_t num_words = (a.offsets[stream + 1] - begin - HEADER_BYTES) / 2;
  const int64_t first = a.seg_start[stream];
  int64_t pos = a.pos[stream];
  w.each([&](int l, DecodeLane& lane) { lane.x = a.states[stream * LANES + l]; });
  const int32_t status = decode_segment(w, tv, a.indexes + first, a.out + first, n,
                                        a.data + begin + HEADER_BYTES, num_words, pos);
  // After a bad table index the stream stays as it was (the caller clears the status).
  const bool keep = status != kBadTableIndex;
  w.each([&](int l, DecodeLane& lane) {
    if (keep) a.states[stream * LANES + l] = lane.x;
    if (l == 0) {
      if (keep) a.pos[stream] = pos;
      a.status[stream] = status;
    }
  });
}

// Checks that stream `stream` ended exactly: every word read, every state back at 2^16.
template <class W>
NIC_WARP void finish_one(W& w, const DecodeArgs& a, int64_t stream) {
  if (a.status[stream] != kOk) return;
  const int64_t num_words = (a.offsets[stream + 1] - a.offsets[stream] - HEADER_BYTES) / 2;
  int32_t status = a.pos[stream] != num_words ? kWordsLeft : kOk;
  w.each([&](int l, DecodeLane& lane) {
    lane.flag = a.states[stream * LANES + l] != RANS_L;
  });
  if (w.scan() && status == kOk) status = kBadFinalState;
  w.each([&](int l, DecodeLane&) {
    if (l == 0) a.status[stream] = status;
  });
}

}  // namespace warp

// ---- CUDA launchers (rans_cuda.cu) ----
// Raw device pointers, asynchronous on `stream` (a cudaStream_t); each returns the cudaError_t
// of its launch (0: launched). `tables` is the blob of `table_bytes` bytes (a multiple of 16)
// described above. Kernels never fault and never assert, whatever the stream bytes: problems are
// reported in the per-stream status.
namespace cuda {

// Encodes every stream into its scratch region.
int launch_encode(const void* tables, int32_t table_count, int64_t table_bytes,
                  const warp::EncodeArgs& args, int64_t num_streams, CUstream_st* stream);
// Copies every stream's header and words to out (out_offsets: exclusive scan of encoded_bytes).
int launch_compact(const warp::CompactArgs& args, int64_t num_streams, CUstream_st* stream);
// Validates every stream's length and header; sets states, pos and status.
int launch_open(const warp::DecodeArgs& args, int64_t num_streams, CUstream_st* stream);
// Decodes the next segment of every stream with seg_len > 0 and status kOk.
int launch_decode(const void* tables, int32_t table_count, int64_t table_bytes,
                  const warp::DecodeArgs& args, int64_t num_streams, CUstream_st* stream);
// Sets the status of every stream still kOk to kWordsLeft or kBadFinalState where it applies.
int launch_finish(const warp::DecodeArgs& args, int64_t num_streams, CUstream_st* stream);

}  // namespace cuda
}  // namespace nic
