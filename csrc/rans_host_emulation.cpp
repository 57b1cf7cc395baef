// pybind11 module engine._rans_warp_host: the CUDA coder's warp algorithm (rans_warp.h) run on
// the host, the 32 lanes of a warp as loops, behind the same calls as the CUDA extension
// (rans_cuda_bindings.cpp) with numpy arrays for tensors. CI has no GPU; this is how it checks
// the kernels' algorithm, and engine.coder.warp's glue, against the CPU coder byte for byte.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>
#include <vector>

#include "rans_warp_host.h"

namespace py = pybind11;
using namespace nic;

namespace {

template <class T>
using Array = py::array_t<T, py::array::c_style>;

template <class T>
const T* in(const Array<T>& a, py::ssize_t size, const char* what) {
  if (a.ndim() != 1 || (size >= 0 && a.size() != size)) {
    throw py::value_error(std::string(what) + ": wrong shape");
  }
  return a.data();
}

template <class T>
T* inout(Array<T>& a, py::ssize_t size, const char* what) {
  if (a.size() != size) throw py::value_error(std::string(what) + ": wrong size");
  return a.mutable_data();
}

// The number of streams of an [S + 1] array of boundaries.
py::ssize_t stream_count(const Array<int64_t>& bounds, const char* what) {
  if (bounds.ndim() != 1 || bounds.size() < 1) {
    throw py::value_error(std::string(what) + ": need S + 1 entries");
  }
  return bounds.size() - 1;
}

// Every range [start[i], start[i] + len[i]) inside [0, size).
void check_ranges(const int64_t* start, const int64_t* len, py::ssize_t count, int64_t size,
                  const char* what) {
  for (py::ssize_t i = 0; i < count; ++i) {
    if (start[i] < 0 || len[i] < 0 || start[i] > size - len[i]) {
      throw py::value_error(std::string(what) + ": range out of bounds");
    }
  }
}

// Stream s is data[offsets[s] .. offsets[s + 1]): increasing offsets from 0, inside the data.
void check_offsets(const int64_t* offsets, py::ssize_t streams, int64_t size) {
  if (offsets[0] != 0 || offsets[streams] > size) throw py::value_error("offsets: out of range");
  for (py::ssize_t s = 0; s < streams; ++s) {
    if (offsets[s + 1] < offsets[s]) throw py::value_error("offsets: not increasing");
  }
}

// The blob copied to 16-byte aligned storage (TableInfo is read as a 16-byte struct).
struct HostTables {
  std::vector<warp::TableInfo> storage;
  warp::TableView view;

  HostTables(const Array<int32_t>& blob, int32_t count) {
    if (blob.ndim() != 1 || blob.size() % 4 || blob.size() / 4 < count || count < 1) {
      throw py::value_error("tables: not a packed table blob");
    }
    storage.resize(blob.size() / 4);
    std::memcpy(storage.data(), blob.data(), blob.size() * sizeof(int32_t));
    view = warp::table_view(storage.data(), count);
  }
};

py::tuple encode_streams(const Array<int32_t>& blob, int32_t count, const Array<int32_t>& values,
                 const Array<int32_t>& indexes, const Array<int64_t>& seg_start,
                 const Array<int64_t>& seg_len, const Array<int64_t>& stream_segs,
                 const Array<int64_t>& scratch_offsets, int64_t scratch_words) {
  const HostTables tables(blob, count);
  const py::ssize_t streams = stream_count(stream_segs, "stream_segs");
  std::vector<uint16_t> scratch(static_cast<size_t>(scratch_words));
  std::vector<uint32_t> states(static_cast<size_t>(streams) * LANES);
  std::vector<int64_t> word_start(streams);
  Array<int32_t> status(streams);
  warp::EncodeArgs a{in(values, -1, "values"),
                     in(indexes, values.size(), "indexes"),
                     in(seg_start, -1, "seg_start"),
                     in(seg_len, seg_start.size(), "seg_len"),
                     in(stream_segs, -1, "stream_segs"),
                     in(scratch_offsets, streams + 1, "scratch_offsets"),
                     scratch.data(),
                     states.data(),
                     word_start.data(),
                     status.mutable_data()};
  check_ranges(a.seg_start, a.seg_len, seg_start.size(), values.size(), "segments");
  for (py::ssize_t s = 0; s < streams; ++s) {
    int64_t bound = 0;
    const int64_t first = a.stream_segs[s], last = a.stream_segs[s + 1];
    if (first < 0 || first > last || last > seg_start.size()) {
      throw py::value_error("stream_segs: out of range");
    }
    for (int64_t g = first; g < last; ++g) bound += warp::MAX_WORDS_PER_VALUE * a.seg_len[g];
    const int64_t region = a.scratch_offsets[s + 1] - a.scratch_offsets[s];
    if (a.scratch_offsets[s] < 0 || region < bound || a.scratch_offsets[s + 1] > scratch_words) {
      throw py::value_error("scratch_offsets: a region is too small");
    }
  }
  for (py::ssize_t s = 0; s < streams; ++s) {
    HostWarp<warp::EncodeLane> w;
    warp::encode_one(w, tables.view, a, s);
  }
  // Compaction: offsets by an exclusive scan of the sizes, then every stream's 16-bit units.
  warp::CompactArgs c{states.data(), scratch.data(), a.scratch_offsets, word_start.data(),
                      nullptr, nullptr};
  Array<int64_t> offsets(streams + 1);
  int64_t* off = offsets.mutable_data();
  off[0] = 0;
  for (py::ssize_t s = 0; s < streams; ++s) off[s + 1] = off[s] + warp::encoded_bytes(c, s);
  Array<uint8_t> data(off[streams]);
  for (py::ssize_t s = 0; s < streams; ++s) compact_host(c, s, data.mutable_data() + off[s]);
  return py::make_tuple(data, offsets, status);
}

py::tuple open_streams(const Array<uint8_t>& data, const Array<int64_t>& offsets) {
  const py::ssize_t streams = stream_count(offsets, "offsets");
  Array<int32_t> states({streams, static_cast<py::ssize_t>(LANES)});
  Array<int64_t> pos(streams);
  Array<int32_t> status(streams);
  warp::DecodeArgs a{in(data, -1, "data"), in(offsets, -1, "offsets"), nullptr, nullptr, nullptr,
                     nullptr, reinterpret_cast<uint32_t*>(states.mutable_data()),
                     pos.mutable_data(), status.mutable_data()};
  check_offsets(a.offsets, streams, data.size());
  for (py::ssize_t s = 0; s < streams; ++s) {
    HostWarp<warp::DecodeLane> w;
    warp::open_one(w, a, s);
  }
  return py::make_tuple(states, pos, status);
}

void decode_streams(const Array<int32_t>& blob, int32_t count, const Array<uint8_t>& data,
            const Array<int64_t>& offsets, const Array<int32_t>& indexes,
            const Array<int64_t>& seg_start, const Array<int64_t>& seg_len, Array<int32_t>& out,
            Array<int32_t>& states, Array<int64_t>& pos, Array<int32_t>& status) {
  const HostTables tables(blob, count);
  const py::ssize_t streams = stream_count(offsets, "offsets");
  warp::DecodeArgs a{in(data, -1, "data"),
                     in(offsets, -1, "offsets"),
                     in(indexes, -1, "indexes"),
                     in(seg_start, streams, "seg_start"),
                     in(seg_len, streams, "seg_len"),
                     inout(out, indexes.size(), "out"),
                     reinterpret_cast<uint32_t*>(inout(states, streams * LANES, "states")),
                     inout(pos, streams, "pos"),
                     inout(status, streams, "status")};
  check_offsets(a.offsets, streams, data.size());
  check_ranges(a.seg_start, a.seg_len, streams, indexes.size(), "segments");
  for (py::ssize_t s = 0; s < streams; ++s) {
    HostWarp<warp::DecodeLane> w;
    warp::decode_one(w, tables.view, a, s);
  }
}

void finish_streams(const Array<int64_t>& offsets, Array<int32_t>& states, Array<int64_t>& pos,
            Array<int32_t>& status) {
  const py::ssize_t streams = stream_count(offsets, "offsets");
  warp::DecodeArgs a{nullptr,
                     in(offsets, -1, "offsets"),
                     nullptr,
                     nullptr,
                     nullptr,
                     nullptr,
                     reinterpret_cast<uint32_t*>(inout(states, streams * LANES, "states")),
                     inout(pos, streams, "pos"),
                     inout(status, streams, "status")};
  for (py::ssize_t s = 0; s < streams; ++s) {
    HostWarp<warp::DecodeLane> w;
    warp::finish_one(w, a, s);
  }
}

}  // namespace

PYBIND11_MODULE(_rans_warp_host, m) {
  m.doc() = "The CUDA rANS coder's warp algorithm emulated on the host (for tests).";
  m.attr("MAX_WORDS_PER_VALUE") = warp::MAX_WORDS_PER_VALUE;
  // Arrays updated in place must be passed as they are (noconvert): a converted copy would
  // swallow the update.
  m.def("encode", &encode_streams, py::arg("tables"), py::arg("count"), py::arg("values"),
        py::arg("indexes"), py::arg("seg_start"), py::arg("seg_len"), py::arg("stream_segs"),
        py::arg("scratch_offsets"), py::arg("scratch_words"),
        "Encodes every stream; returns (data uint8, offsets int64 [S + 1], status int32 [S]).");
  m.def("open", &open_streams, py::arg("data"), py::arg("offsets"),
        "Validates every stream's header; returns (states int32 [S, 32], pos, status).");
  m.def("decode", &decode_streams, py::arg("tables"), py::arg("count"), py::arg("data"),
        py::arg("offsets"), py::arg("indexes"), py::arg("seg_start"), py::arg("seg_len"),
        py::arg("out").noconvert(), py::arg("states").noconvert(), py::arg("pos").noconvert(),
        py::arg("status").noconvert(), "Decodes one segment of every stream, in place.");
  m.def("finish", &finish_streams, py::arg("offsets"), py::arg("states").noconvert(),
        py::arg("pos").noconvert(), py::arg("status").noconvert(),
        "Checks that every stream ended exactly, in place.");
}
