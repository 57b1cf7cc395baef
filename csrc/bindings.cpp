// pybind11 module engine._rans: the CPU rANS coder on numpy buffers, GIL released while coding,
// and the coders' shared constants (stream header size, status messages) for Python. Batch calls
// name the failing stream: ValueError("stream i: ...").
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "rans_cpu.h"

namespace py = pybind11;

namespace {

using IntArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

IntArray as_vector(py::handle obj, const std::string& what) {
  IntArray a = IntArray::ensure(obj);
  if (!a || a.ndim() != 1) throw py::value_error(what + " must be a 1-D int32 array");
  return a;
}

unsigned thread_count(int threads) {
  if (threads < 0) throw py::value_error("threads must be >= 0 (0: all hardware threads)");
  return static_cast<unsigned>(threads);
}

std::vector<uint8_t> bytes_of(py::handle data) {
  Py_buffer view;
  if (PyObject_GetBuffer(data.ptr(), &view, PyBUF_SIMPLE) != 0) throw py::error_already_set();
  std::unique_ptr<Py_buffer, decltype(&PyBuffer_Release)> release(&view, PyBuffer_Release);
  const auto* p = static_cast<const uint8_t*>(view.buf);
  return std::vector<uint8_t>(p, p + view.len);
}

py::value_error stream_error(size_t i, const std::string& what) {
  return py::value_error("stream " + std::to_string(i) + ": " + what);
}

// Runs fn(i) for i in [0, n) on up to `threads` threads with the GIL released; then raises
// stream_error for the lowest i whose fn threw invalid_argument (every other i has run).
template <class F>
void for_each_stream(size_t n, int threads, F fn) {
  const unsigned workers = thread_count(threads);
  std::vector<std::optional<std::string>> errors(n);
  {
    py::gil_scoped_release nogil;
    nic::parallel_for(n, workers, [&](size_t i) {
      try {
        fn(i);
      } catch (const std::invalid_argument& e) {
        errors[i] = e.what();
      }
    });
  }
  for (size_t i = 0; i < n; ++i) {
    if (errors[i]) throw stream_error(i, *errors[i]);
  }
}

// Segments of every stream: pairs of (values, indexes) arrays, or index arrays alone
// (with_values false). `arrays` keeps the converted inputs alive.
std::vector<std::vector<nic::Segment>> plan_of(const py::sequence& streams, bool with_values,
                                               std::vector<IntArray>& arrays) {
  std::vector<std::vector<nic::Segment>> plan(streams.size());
  for (size_t i = 0; i < plan.size(); ++i) {
    const std::string where = "stream " + std::to_string(i);
    for (py::handle item : py::cast<py::sequence>(streams[i])) {
      const std::string seg = where + ", segment " + std::to_string(plan[i].size());
      if (!with_values) {
        const IntArray& indexes = arrays.emplace_back(as_vector(item, seg + " indexes"));
        plan[i].push_back({nullptr, indexes.data(), static_cast<size_t>(indexes.size())});
        continue;
      }
      const auto pair = py::cast<py::sequence>(item);
      if (pair.size() != 2) throw py::value_error(seg + " must be a (values, indexes) pair");
      arrays.push_back(as_vector(pair[0], seg + " values"));
      arrays.push_back(as_vector(pair[1], seg + " indexes"));
      const IntArray& values = arrays[arrays.size() - 2];
      const IntArray& indexes = arrays.back();
      if (values.size() != indexes.size()) {
        throw py::value_error(seg + ": values and indexes differ in length");
      }
      plan[i].push_back({values.data(), indexes.data(), static_cast<size_t>(values.size())});
    }
  }
  return plan;
}

py::list encode(const nic::Tables& tables, const py::sequence& streams, int threads) {
  std::vector<IntArray> arrays;
  const auto plan = plan_of(streams, true, arrays);
  std::vector<std::vector<uint8_t>> out(plan.size());
  for_each_stream(plan.size(), threads,
                  [&](size_t i) { out[i] = nic::encode_stream(tables, plan[i]); });
  py::list result;
  for (const auto& b : out) {
    result.append(py::bytes(reinterpret_cast<const char*>(b.data()), b.size()));
  }
  return result;
}

void check_indexes(const nic::Tables& tables, const py::sequence& streams) {
  std::vector<IntArray> arrays;
  const auto plan = plan_of(streams, false, arrays);
  for_each_stream(plan.size(), 1, [&](size_t i) { nic::check_segments(tables, plan[i]); });
}

py::list open_many(const std::shared_ptr<const nic::Tables>& tables, const py::sequence& streams) {
  py::list decoders;
  for (size_t i = 0; i < streams.size(); ++i) {
    try {
      decoders.append(py::cast(std::make_unique<nic::Decoder>(tables, bytes_of(streams[i]))));
    } catch (const std::invalid_argument& e) {
      throw stream_error(i, e.what());
    }
  }
  return decoders;
}

py::list decode_many(const std::vector<nic::Decoder*>& decoders, const py::sequence& indexes,
                     int threads) {
  if (indexes.size() != decoders.size()) {
    throw py::value_error("decode_many needs one index array per decoder");
  }
  std::vector<nic::Decoder*> sorted(decoders);
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    throw py::value_error("decode_many got the same decoder twice");
  }
  std::vector<IntArray> in, out;
  for (size_t i = 0; i < decoders.size(); ++i) {
    in.push_back(as_vector(indexes[i], "indexes[" + std::to_string(i) + "]"));
    out.emplace_back(in.back().size());
  }
  for_each_stream(decoders.size(), threads, [&](size_t i) {
    decoders[i]->decode(in[i].data(), out[i].mutable_data(), in[i].size());
  });
  return py::cast(out);
}

void finish_many(const std::vector<nic::Decoder*>& decoders) {
  for (size_t i = 0; i < decoders.size(); ++i) {
    try {
      decoders[i]->finish();
    } catch (const std::invalid_argument& e) {
      throw stream_error(i, e.what());
    }
  }
}

}  // namespace

PYBIND11_MODULE(_rans, m) {
  m.doc() = "Interleaved rANS coder of nicengine (bitstream: docs/CODER.md).";
  m.attr("LANES") = nic::LANES;
  m.attr("PRECISION") = nic::PREC_BITS;
  m.attr("HEADER_BYTES") = nic::HEADER_BYTES;
  py::tuple messages(static_cast<size_t>(nic::kNumStatus));
  for (int s = 0; s < nic::kNumStatus; ++s) messages[s] = nic::STATUS_MESSAGES[s];
  m.attr("STATUS_MESSAGES") = messages;
  m.attr("BAD_TABLE_INDEX") = static_cast<int>(nic::kBadTableIndex);

  py::class_<nic::Tables, std::shared_ptr<nic::Tables>>(m, "Tables")
      .def(py::init([](const IntArray& cdfs, const IntArray& sizes, const IntArray& offsets) {
             if (cdfs.ndim() != 2) throw py::value_error("cdfs must be a 2-D int32 array [T, K]");
             const auto count = cdfs.shape(0);
             if (sizes.ndim() != 1 || sizes.shape(0) != count || offsets.ndim() != 1 ||
                 offsets.shape(0) != count) {
               throw py::value_error("sizes and offsets must be 1-D int32 arrays of length T");
             }
             return std::make_shared<nic::Tables>(cdfs.data(), count, cdfs.shape(1), sizes.data(),
                                                  offsets.data());
           }),
           py::arg("cdfs"), py::arg("sizes"), py::arg("offsets"),
           "CDF tables: row t of cdfs is valid on 0..sizes[t], its last symbol is ESCAPE and "
           "value v is symbol v - offsets[t].")
      .def_property_readonly("num_tables", &nic::Tables::num_tables);

  m.def("encode", &encode, py::arg("tables"), py::arg("streams"), py::arg("threads") = 0,
        "Encodes each stream, a list of (values, indexes) segments, into bytes; streams are "
        "coded in parallel on up to `threads` threads (0: all).");
  m.def("check_indexes", &check_indexes, py::arg("tables"), py::arg("streams"),
        "Raises encode's error for the first table index out of range in streams, a list of "
        "lists of index arrays (one per segment).");

  py::class_<nic::Decoder>(m, "Decoder")
      .def(py::init([](std::shared_ptr<const nic::Tables> tables, py::handle data) {
             return std::make_unique<nic::Decoder>(std::move(tables), bytes_of(data));
           }),
           py::arg("tables"), py::arg("data"))
      .def(
          "decode",
          [](nic::Decoder& self, py::handle indexes) {
            const IntArray in = as_vector(indexes, "indexes");
            IntArray out(in.size());
            {
              py::gil_scoped_release nogil;
              self.decode(in.data(), out.mutable_data(), in.size());
            }
            return out;
          },
          py::arg("indexes"), "Decodes the next segment, whose table indexes are given.")
      .def("finish", &nic::Decoder::finish,
           "Raises ValueError unless the stream ended exactly after the last segment.");

  m.def("open_many", &open_many, py::arg("tables"), py::arg("streams"),
        "A Decoder for each of the bytes-like streams.");
  m.def("decode_many", &decode_many, py::arg("decoders"), py::arg("indexes"),
        py::arg("threads") = 0,
        "Decodes the next segment on each decoder, in parallel; returns the value arrays.");
  m.def("finish_many", &finish_many, py::arg("decoders"), "Calls finish() on each decoder.");
}
