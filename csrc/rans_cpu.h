// CPU implementation of nicengine's interleaved rANS coder (bitstream: docs/CODER.md).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "rans_core.h"
#include "rans_status.h"

namespace nic {

// Raised for streams that cannot have come from the encoder: the status's message (it starts
// "corrupt stream:"), then the detail in parentheses if any. Derives from invalid_argument so
// that bindings map it to ValueError like other input errors.
struct CorruptStream : std::invalid_argument {
  explicit CorruptStream(Status status, const std::string& detail = "")
      : std::invalid_argument(STATUS_MESSAGES[status] +
                              (detail.empty() ? "" : " (" + detail + ")")) {}
};

// Validated CDF tables: table t has size(t) symbols, the last one being ESCAPE; value v is
// regular symbol v - offset(t) when that lies in [0, size(t) - 1).
class Tables {
 public:
  // cdfs is a row-major [num_tables, width] array; row t is read on 0..sizes[t] only.
  Tables(const int32_t* cdfs, size_t num_tables, size_t width, const int32_t* sizes,
         const int32_t* offsets);

  size_t num_tables() const { return sizes_.size(); }
  const uint32_t* cdf(size_t t) const { return cdf_.data() + t * row_len_; }
  int32_t size(size_t t) const { return sizes_[t]; }
  int32_t offset(size_t t) const { return offsets_[t]; }

  // For each lane l < active: the symbol s[l] of table t[l] with
  // cdf(t[l])[s[l]] <= slot[l] < cdf(t[l])[s[l] + 1].
  void find_symbols(const int32_t* t, const uint32_t* slot, int active, uint32_t* s) const;

 private:
  // A slot's top LUT_BITS bits select a bucket of 2^BUCKET_BITS slots; lut_[t << LUT_BITS | b]
  // is the symbol of table t at the bucket's first slot. 2^10 buckets (2 KiB per table) leave
  // six halving steps for the Gaussian tables, whose tails have symbols one slot wide; 2^12
  // buckets (four steps) measured no faster.
  static constexpr int LUT_BITS = 10;
  static constexpr int BUCKET_BITS = PREC_BITS - LUT_BITS;
  std::vector<uint16_t> lut_;
  int steps_ = 0;  // halving steps that resolve any bucket
  // Row t: cdf(t)[0..size(t)] then PREC_TOTAL padding to row_len_ entries.
  size_t row_len_ = 0;
  std::vector<uint32_t> cdf_;
  std::vector<int32_t> sizes_, offsets_;
};

// One segment: n values and the table index of each (borrowed pointers; check_segments reads
// the indexes only).
struct Segment {
  const int32_t* values;
  const int32_t* indexes;
  size_t n;
};

// Throws std::invalid_argument("segment j: table index ... out of range ...") for the first
// table index out of range in the segments.
void check_segments(const Tables& tables, const std::vector<Segment>& segments);

// Codes the segments in order into one stream, after check_segments.
std::vector<uint8_t> encode_stream(const Tables& tables, const std::vector<Segment>& segments);

// Decodes a stream one segment at a time; the caller supplies each segment's table indexes, so
// they may depend on the values of earlier segments. Every read is checked: any input at all is
// either decoded (damage can go unnoticed, then values differ) or rejected with CorruptStream,
// and memory is never accessed out of bounds.
class Decoder {
 public:
  Decoder(std::shared_ptr<const Tables> tables, std::vector<uint8_t> data);

  // Decodes the next segment of n values into out. Throws std::invalid_argument for a table
  // index out of range (before consuming anything) and CorruptStream for bad data, after which
  // the decoder refuses further work.
  void decode(const int32_t* indexes, int32_t* out, size_t n);

  // Checks that the stream ended exactly here: every word consumed, every state back at RANS_L.
  void finish() const;

 private:
  void advance(int lane, uint32_t start, uint32_t freq);

  std::shared_ptr<const Tables> tables_;
  std::vector<uint8_t> data_;  // the stream plus one zero word of padding
  size_t num_words_, pos_ = 0;  // words after the header; next word to read
  uint32_t x_[LANES];
  bool failed_ = false;
};

// Runs fn(i) for i in [0, n) on up to `threads` workers (0: one per hardware thread). The first
// exception thrown by fn is rethrown here once all workers have stopped.
template <class F>
void parallel_for(size_t n, unsigned threads, F fn) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  const size_t workers = std::min<size_t>(threads, n);
  if (workers <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next = n;  // stop handing out work
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace nic
