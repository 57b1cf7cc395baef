// Differential fuzz target for the rANS coders (bitstream: docs/CODER.md): the CPU coder
// (csrc/rans_cpu.cpp) against the CUDA coder's warp algorithm run on the host (csrc/rans_warp.h).
//
// Built with AddressSanitizer and UBSan it checks, for every input, that neither coder reads or
// writes out of bounds or hits undefined behaviour, and that the two agree: the same bytes from
// the same values, and from the same bytes the same values or a rejection at the same point.
// A disagreement aborts, so a sanitizer or fuzzer reports it like a crash.
//
// One source, two drivers (docs/CODER.md, "Fuzzing"):
//   clang++ -fsanitize=fuzzer,...   libFuzzer drives LLVMFuzzerTestOneInput (`make fuzz`)
//   g++ -DNIC_FUZZ_MAIN ...         main() below feeds random inputs for a number of iterations
//                                   or seconds, or replays input files (tests/test_coder_fuzz.py
//                                   runs it in `make test`)
//
// An input is read as a recipe, so that random bytes reach every part of the decoders:
//   byte 0 even: "raw". Byte 1: segments (1 + b % 4); then one byte per segment, its length
//     (b * 3); then one byte that picks the table-index pattern; the rest is the stream.
//   byte 0 odd: "encode, damage, decode". Value records until the byte 0xff (or the input's
//     end): a control byte c, whose low bits pick the table and whose top two bits say what
//     follows: 1 a value within +-32768 of the table's middle (2 bytes), 2 any int32 (4 bytes),
//     0 and 3 a value within +-128 of it (1 byte), except that c in 0xf8..0xfe ends the segment.
//     Both coders encode the values (the bytes must match); then 4-byte damage records (op,
//     position as 2 bytes, argument) change the stream: flip bits, cut it short, overwrite a
//     word, or append bytes. Undamaged, both must give back the values exactly; damaged, both
//     must agree.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "rans_cpu.h"
#include "rans_warp_host.h"

namespace {

using nic::LANES;
using nic::PREC_TOTAL;
namespace warp = nic::warp;

constexpr size_t MAX_VALUES = 4096;
constexpr int MAX_SEGMENTS = 4;

// Set by the standalone driver: saves the input being run, so that a failure can be replayed.
void (*save_input)() = nullptr;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "coder_fuzz: %s\n", what);
  if (save_input) save_input();
  std::abort();
}

// ---- tables: both coders' forms of one fixed set ----

struct TableSpec {
  int32_t offset;
  std::vector<uint32_t> freq;  // regular symbols, then ESCAPE
};

// Probabilities that sum to 2^16, every one at least 1: weights scaled, the rest to the largest.
std::vector<uint32_t> normalise(const std::vector<double>& weights) {
  double total = 0;
  for (double w : weights) total += w;
  std::vector<uint32_t> freq(weights.size());
  int64_t left = PREC_TOTAL;
  size_t biggest = 0;
  for (size_t s = 0; s < weights.size(); ++s) {
    freq[s] = std::max<uint32_t>(1, static_cast<uint32_t>(weights[s] / total * 60000));
    left -= freq[s];
    if (freq[s] > freq[biggest]) biggest = s;
  }
  freq[biggest] += static_cast<uint32_t>(left);
  return freq;
}

std::vector<TableSpec> table_specs() {
  std::vector<TableSpec> specs;
  auto laplace = [](int n, double spread, double escape) {
    std::vector<double> w;
    for (int s = 0; s < n - 1; ++s) w.push_back(std::exp(-std::abs(s - (n - 2) / 2.0) / spread));
    w.push_back(escape);
    return normalise(w);
  };
  specs.push_back({-20, laplace(42, 3.0, 1e-3)});            // a latent-like table
  specs.push_back({0, {PREC_TOTAL - 1, 1}});                 // one regular symbol, ESCAPE at 1
  specs.push_back({-500, laplace(1001, 300.0, 0.5)});        // wide: many LUT buckets
  specs.push_back({7, {1, 1, 1, PREC_TOTAL - 4, 1}});        // symbols one slot wide
  specs.push_back({INT32_MAX - 9, laplace(11, 2.0, 0.05)});  // regular values up to INT32_MAX
  specs.push_back({INT32_MIN, laplace(5, 1.0, 0.2)});        // and from INT32_MIN
  specs.push_back({-1, {40000, 20000, 5536}});               // docs/CODER.md's example
  specs.push_back({3, {PREC_TOTAL / 2, PREC_TOTAL / 2}});    // half the values escape
  return specs;
}

struct Tables {
  std::vector<TableSpec> specs = table_specs();
  std::shared_ptr<const nic::Tables> cpu;
  std::vector<warp::TableInfo> blob;  // TableInfo entries, then the uint16 cdf rows
  warp::TableView view{};

  Tables() {
    const size_t count = specs.size();
    size_t width = 0;
    for (const TableSpec& t : specs) width = std::max(width, t.freq.size() + 2);
    std::vector<int32_t> cdfs(count * width, 0), sizes, offsets;
    std::vector<uint16_t> rows;
    for (size_t t = 0; t < count; ++t) {
      const TableSpec& spec = specs[t];
      sizes.push_back(static_cast<int32_t>(spec.freq.size()));
      offsets.push_back(spec.offset);
      blob.push_back({static_cast<int32_t>(rows.size()), sizes.back(), spec.offset, 0});
      uint32_t c = 0;
      for (size_t s = 0; s < spec.freq.size(); ++s) {
        cdfs[t * width + s] = static_cast<int32_t>(c);
        rows.push_back(static_cast<uint16_t>(c));
        c += spec.freq[s];
      }
      cdfs[t * width + spec.freq.size()] = static_cast<int32_t>(c);
    }
    // nic::Tables validates the rows (a sum other than 2^16 throws), for both coders.
    cpu = std::make_shared<nic::Tables>(cdfs.data(), count, width, sizes.data(), offsets.data());
    rows.resize((rows.size() + 7) / 8 * 8);  // whole 16-byte units
    const size_t infos = blob.size();
    blob.resize(infos + rows.size() / 8);
    std::memcpy(blob.data() + infos, rows.data(), rows.size() * sizeof(uint16_t));
    view = warp::table_view(blob.data(), static_cast<int32_t>(count));
  }

  int32_t count() const { return static_cast<int32_t>(specs.size()); }
  int64_t middle(int32_t t) const {  // the value of the middle regular symbol
    return int64_t{specs[t].offset} + static_cast<int64_t>(specs[t].freq.size() - 2) / 2;
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

struct Segment {
  std::vector<int32_t> values, indexes;
};

// ---- the two coders behind one interface ----

std::vector<uint8_t> encode_cpu(const std::vector<Segment>& segments) {
  std::vector<nic::Segment> segs;
  for (const Segment& s : segments) {
    segs.push_back({s.values.data(), s.indexes.data(), s.values.size()});
  }
  return nic::encode_stream(*tables().cpu, segs);
}

std::vector<uint8_t> encode_warp(const std::vector<Segment>& segments) {
  std::vector<int32_t> values, indexes;
  std::vector<int64_t> seg_start, seg_len;
  for (const Segment& s : segments) {
    seg_start.push_back(static_cast<int64_t>(values.size()));
    seg_len.push_back(static_cast<int64_t>(s.values.size()));
    values.insert(values.end(), s.values.begin(), s.values.end());
    indexes.insert(indexes.end(), s.indexes.begin(), s.indexes.end());
  }
  const int64_t stream_segs[2] = {0, static_cast<int64_t>(segments.size())};
  const int64_t scratch_words = warp::MAX_WORDS_PER_VALUE * static_cast<int64_t>(values.size());
  const int64_t scratch_offsets[2] = {0, scratch_words};
  std::vector<uint16_t> scratch(static_cast<size_t>(scratch_words) + 1);
  uint32_t states[LANES];
  int64_t word_start = 0;
  int32_t status = -1;
  const warp::EncodeArgs a{values.data(), indexes.data(), seg_start.data(), seg_len.data(),
                           stream_segs, scratch_offsets, scratch.data(), states, &word_start,
                           &status};
  nic::HostWarp<warp::EncodeLane> w;
  warp::encode_one(w, tables().view, a, 0);
  if (status != nic::kOk) fail("warp encoder: bad status for valid indexes");
  const warp::CompactArgs c{states, scratch.data(), scratch_offsets, &word_start, nullptr,
                            nullptr};
  std::vector<uint8_t> out(static_cast<size_t>(warp::encoded_bytes(c, 0)));
  nic::compact_host(c, 0, out.data());
  return out;
}

// What a decoder made of a stream: the values of every segment it decoded, and where it stopped
// (-1: the header was rejected; k < segments: segment k was rejected; segments: finish()
// rejected the end; segments + 1: accepted).
struct Outcome {
  std::vector<std::vector<int32_t>> values;
  int stop = -1;
};

Outcome decode_cpu(const std::vector<uint8_t>& data, const std::vector<Segment>& segments) {
  Outcome o;
  std::unique_ptr<nic::Decoder> dec;
  try {
    dec = std::make_unique<nic::Decoder>(tables().cpu, data);
  } catch (const nic::CorruptStream&) {
    return o;
  }
  for (o.stop = 0; o.stop < static_cast<int>(segments.size()); ++o.stop) {
    const Segment& s = segments[o.stop];
    std::vector<int32_t> out(s.indexes.size());
    try {
      dec->decode(s.indexes.data(), out.data(), out.size());
    } catch (const nic::CorruptStream&) {
      return o;
    }
    o.values.push_back(std::move(out));
  }
  try {
    dec->finish();
  } catch (const nic::CorruptStream&) {
    return o;
  }
  o.stop += 1;
  return o;
}

Outcome decode_warp(const std::vector<uint8_t>& data, const std::vector<Segment>& segments) {
  Outcome o;
  const int64_t offsets[2] = {0, static_cast<int64_t>(data.size())};
  uint32_t states[LANES];
  int64_t pos = 0, seg_start = 0, seg_len = 0;
  int32_t status = -1;
  warp::DecodeArgs a{data.data(), offsets, nullptr, &seg_start, &seg_len, nullptr, states, &pos,
                     &status};
  nic::HostWarp<warp::DecodeLane> w;
  warp::open_one(w, a, 0);
  if (status != nic::kOk) return o;
  for (o.stop = 0; o.stop < static_cast<int>(segments.size()); ++o.stop) {
    const Segment& s = segments[o.stop];
    std::vector<int32_t> out(s.indexes.size());
    a.indexes = s.indexes.data();
    a.out = out.data();
    seg_len = static_cast<int64_t>(out.size());
    warp::decode_one(w, tables().view, a, 0);
    if (status != nic::kOk) return o;
    o.values.push_back(std::move(out));
  }
  warp::finish_one(w, a, 0);
  if (status == nic::kOk) o.stop += 1;
  return o;
}

// How the inputs ended, for the standalone driver's summary: rejected in the header, in a
// segment, at the end, or accepted (undamaged, or damaged without it being noticed).
uint64_t outcomes[5] = {};

void check_decoders_agree(const std::vector<uint8_t>& data, const std::vector<Segment>& segments,
                          bool must_round_trip) {
  const Outcome cpu = decode_cpu(data, segments), gpu = decode_warp(data, segments);
  if (cpu.stop != gpu.stop) fail("the decoders stop at different points");
  const int end = static_cast<int>(segments.size());
  ++outcomes[cpu.stop < 0 ? 0 : cpu.stop < end ? 1 : cpu.stop == end ? 2 : must_round_trip ? 3 : 4];
  if (cpu.values != gpu.values) fail("the decoders give different values");
  if (!must_round_trip) return;
  if (cpu.stop != end + 1) fail("an undamaged stream is rejected");
  for (size_t k = 0; k < segments.size(); ++k) {
    if (cpu.values[k] != segments[k].values) fail("an undamaged stream decodes wrongly");
  }
}

// ---- reading an input as a recipe ----

struct Reader {
  const uint8_t* p;
  size_t left;
  bool empty() const { return left == 0; }
  uint32_t take(int bytes) {  // little-endian; zero past the end
    uint32_t v = 0;
    for (int i = 0; i < bytes && left; ++i, --left) v |= static_cast<uint32_t>(*p++) << (8 * i);
    return v;
  }
};

void raw(Reader in) {
  const int count = 1 + static_cast<int>(in.take(1) % MAX_SEGMENTS);
  std::vector<Segment> segments(count);
  for (Segment& s : segments) s.indexes.resize(in.take(1) * 3);
  const uint32_t pattern = in.take(1);  // pattern 0: table i % count for value i
  uint32_t i = 0;
  for (Segment& s : segments) {
    for (int32_t& t : s.indexes) {
      t = static_cast<int32_t>((pattern * (i / 8) + i) % tables().count());
      ++i;
    }
  }
  check_decoders_agree(std::vector<uint8_t>(in.p, in.p + in.left), segments, false);
}

void encode_damage_decode(Reader in) {
  std::vector<Segment> segments(1);
  size_t total = 0;
  while (!in.empty() && total < MAX_VALUES) {
    const uint32_t c = in.take(1);
    if (c == 0xff) break;
    if (c >= 0xf8) {
      if (segments.size() < MAX_SEGMENTS) segments.emplace_back();
      continue;
    }
    const int32_t t = static_cast<int32_t>(c % tables().count());
    const uint32_t kind = c >> 6;
    const int64_t v = kind == 1 ? tables().middle(t) + static_cast<int16_t>(in.take(2))
                    : kind == 2 ? static_cast<int32_t>(in.take(4))
                                : tables().middle(t) + static_cast<int8_t>(in.take(1));
    segments.back().values.push_back(
        static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(v, INT32_MIN), INT32_MAX)));
    segments.back().indexes.push_back(t);
    ++total;
  }
  std::vector<uint8_t> data = encode_cpu(segments);
  if (encode_warp(segments) != data) fail("the encoders give different bytes");
  const std::vector<uint8_t> original = data;
  while (!in.empty()) {
    const uint32_t op = in.take(1) % 4, at = in.take(2), arg = in.take(1);
    if (op == 0 && !data.empty()) data[at % data.size()] ^= static_cast<uint8_t>(arg | 1);
    if (op == 1) data.resize(std::min<size_t>(data.size(), at % (data.size() + 1)));
    if (op == 2 && data.size() >= 2) {  // a word: both bytes
      const size_t word = at % (data.size() / 2);
      data[2 * word] = data[2 * word + 1] = static_cast<uint8_t>(arg);
    }
    if (op == 3) data.insert(data.end(), 1 + arg % 4, static_cast<uint8_t>(at));
  }
  check_decoders_agree(data, segments, data == original);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Reader in{data + 1, size - 1};
  if (data[0] % 2) {
    encode_damage_decode(in);
  } else {
    raw(in);
  }
  return 0;
}

#ifdef NIC_FUZZ_MAIN
// usage: coder_fuzz [--iterations N] [--seconds S] [--seed K] [FILE ...]
// With files: runs each once (a saved failure). Otherwise random inputs of 1 to 2048 bytes; on a
// failure (a disagreement or a sanitizer's report) the input is saved to coder_fuzz_failure.bin.
#include <chrono>
#include <random>
#include <string>

// The sanitizers' hook for "about to die" (weak: absent from unsanitized builds).
extern "C" void __sanitizer_set_death_callback(void (*callback)()) __attribute__((weak));

namespace {

std::vector<uint8_t> current;

void save_current() {
  if (FILE* f = std::fopen("coder_fuzz_failure.bin", "wb")) {
    std::fwrite(current.data(), 1, current.size(), f);
    std::fclose(f);
    std::fprintf(stderr, "coder_fuzz: the input is in coder_fuzz_failure.bin\n");
  }
}

std::vector<uint8_t> read_file(const std::string& name) {
  FILE* f = std::fopen(name.c_str(), "rb");
  if (!f) fail("cannot open an input file");
  std::vector<uint8_t> bytes;
  for (int c; (c = std::fgetc(f)) != EOF;) bytes.push_back(static_cast<uint8_t>(c));
  std::fclose(f);
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t iterations = 0, seed = 1;
  double seconds = 0;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--iterations" && has_value) {
      iterations = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--seconds" && has_value) {
      seconds = std::strtod(argv[++i], nullptr);
    } else if (arg == "--seed" && has_value) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else {
      files.push_back(arg);
    }
  }
  for (const std::string& name : files) {
    const std::vector<uint8_t> input = read_file(name);
    LLVMFuzzerTestOneInput(input.data(), input.size());
  }
  if (!files.empty()) return 0;
  save_input = save_current;
  if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(save_current);
  if (iterations == 0 && seconds == 0) iterations = 10000;
  std::mt19937_64 rng(seed);
  const auto begin = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  };
  uint64_t n = 0, bytes = 0;
  for (; (iterations == 0 || n < iterations) && (seconds == 0 || elapsed() < seconds); ++n) {
    // Mostly short inputs: most of the decoders' branches are met in the first few groups.
    current.resize(1 + rng() % (rng() % 8 ? 512 : 2048));
    for (uint8_t& b : current) b = static_cast<uint8_t>(rng());
    LLVMFuzzerTestOneInput(current.data(), current.size());
    bytes += current.size();
  }
  auto u = [](uint64_t v) { return static_cast<unsigned long long>(v); };
  std::printf("coder_fuzz: %llu inputs (%llu bytes) in %.1f s, seed %llu: no failure. Rejected "
              "in the header %llu, in a segment %llu, at the end %llu; round trips %llu; damage "
              "not noticed %llu\n", u(n), u(bytes), elapsed(), u(seed), u(outcomes[0]),
              u(outcomes[1]), u(outcomes[2]), u(outcomes[3]), u(outcomes[4]));
  return 0;
}
#endif
