// torch binding of the CUDA rANS coder (rans_cuda.cu): checks the tensors and runs the launchers
// on the current CUDA stream. Built on first use by engine.coder.cuda_build; engine.coder.warp
// builds the arguments. The calls mirror those of the host emulation (rans_host_emulation.cpp).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "rans_warp.h"

namespace {

using torch::Tensor;

void check(const Tensor& t, torch::ScalarType type, const torch::Device& device,
           const char* what) {
  TORCH_CHECK(t.device() == device, what, " must be on ", device, ", not ", t.device());
  TORCH_CHECK(t.scalar_type() == type, what, " must be ", type, ", not ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous() && t.dim() == 1, what, " must be a contiguous 1-D tensor");
}

void check_size(const Tensor& t, int64_t size, const char* what) {
  TORCH_CHECK(t.numel() == size, what, " must have ", size, " elements, not ", t.numel());
}

int64_t stream_count(const Tensor& bounds, const char* what) {
  TORCH_CHECK(bounds.numel() >= 1, what, " needs S + 1 entries");
  return bounds.numel() - 1;
}

void launched(int err) { C10_CUDA_CHECK(static_cast<cudaError_t>(err)); }

uint32_t* as_u32(const Tensor& t) { return reinterpret_cast<uint32_t*>(t.data_ptr<int32_t>()); }

std::tuple<Tensor, Tensor, Tensor> encode_streams(const Tensor& tables, int64_t count,
                                          const Tensor& values, const Tensor& indexes,
                                          const Tensor& seg_start, const Tensor& seg_len,
                                          const Tensor& stream_segs,
                                          const Tensor& scratch_offsets, int64_t scratch_words) {
  const torch::Device device = values.device();
  TORCH_CHECK(device.is_cuda(), "values must be on a CUDA device");
  check(tables, torch::kInt32, device, "tables");
  check(values, torch::kInt32, device, "values");
  check(indexes, torch::kInt32, device, "indexes");
  check(seg_start, torch::kInt64, device, "seg_start");
  check(seg_len, torch::kInt64, device, "seg_len");
  check(stream_segs, torch::kInt64, device, "stream_segs");
  check(scratch_offsets, torch::kInt64, device, "scratch_offsets");
  check_size(indexes, values.numel(), "indexes");
  check_size(seg_len, seg_start.numel(), "seg_len");
  const int64_t streams = stream_count(stream_segs, "stream_segs");
  check_size(scratch_offsets, streams + 1, "scratch_offsets");
  TORCH_CHECK(scratch_words >= 0, "scratch_words must be >= 0");

  const c10::cuda::CUDAGuard guard(device);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const auto options = values.options();
  Tensor scratch = torch::empty({scratch_words}, options.dtype(torch::kInt16));
  Tensor states = torch::empty({streams, nic::LANES}, options.dtype(torch::kInt32));
  Tensor word_start = torch::empty({streams}, options.dtype(torch::kInt64));
  Tensor status = torch::empty({streams}, options.dtype(torch::kInt32));
  auto* words = reinterpret_cast<uint16_t*>(scratch.data_ptr<int16_t>());
  const nic::warp::EncodeArgs args{values.data_ptr<int32_t>(),    indexes.data_ptr<int32_t>(),
                                   seg_start.data_ptr<int64_t>(), seg_len.data_ptr<int64_t>(),
                                   stream_segs.data_ptr<int64_t>(),
                                   scratch_offsets.data_ptr<int64_t>(),
                                   words,
                                   as_u32(states),
                                   word_start.data_ptr<int64_t>(),
                                   status.data_ptr<int32_t>()};
  launched(nic::cuda::launch_encode(tables.data_ptr<int32_t>(), static_cast<int32_t>(count),
                                    tables.numel() * 4, args, streams, stream));

  // Output offsets: an exclusive scan of the stream sizes on the device; only the total comes
  // back to the host, to size the output.
  Tensor offsets = torch::zeros({streams + 1}, options.dtype(torch::kInt64));
  Tensor sizes = (scratch_offsets.slice(0, 1) - word_start) * 2 + nic::HEADER_BYTES;
  offsets.slice(0, 1).copy_(sizes.cumsum(0));
  const int64_t total = offsets[streams].item<int64_t>();
  Tensor out = torch::empty({total}, options.dtype(torch::kUInt8));
  const nic::warp::CompactArgs compact{as_u32(states),
                                       words,
                                       scratch_offsets.data_ptr<int64_t>(),
                                       word_start.data_ptr<int64_t>(),
                                       offsets.data_ptr<int64_t>(),
                                       out.data_ptr<uint8_t>()};
  launched(nic::cuda::launch_compact(compact, streams, stream));
  return {out, offsets, status};
}

std::tuple<Tensor, Tensor, Tensor> open_streams(const Tensor& data, const Tensor& offsets) {
  const torch::Device device = data.device();
  TORCH_CHECK(device.is_cuda(), "data must be on a CUDA device");
  check(data, torch::kUInt8, device, "data");
  check(offsets, torch::kInt64, device, "offsets");
  const int64_t streams = stream_count(offsets, "offsets");
  const c10::cuda::CUDAGuard guard(device);
  const auto options = offsets.options();
  Tensor states = torch::empty({streams, nic::LANES}, options.dtype(torch::kInt32));
  Tensor pos = torch::empty({streams}, options);
  Tensor status = torch::empty({streams}, options.dtype(torch::kInt32));
  const nic::warp::DecodeArgs args{data.data_ptr<uint8_t>(),
                                   offsets.data_ptr<int64_t>(),
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   as_u32(states),
                                   pos.data_ptr<int64_t>(),
                                   status.data_ptr<int32_t>()};
  launched(nic::cuda::launch_open(args, streams, c10::cuda::getCurrentCUDAStream().stream()));
  return {states, pos, status};
}

void check_decoder(const Tensor& offsets, const Tensor& states, const Tensor& pos,
                   const Tensor& status, const torch::Device& device, int64_t streams) {
  check(offsets, torch::kInt64, device, "offsets");
  TORCH_CHECK(states.device() == device && states.scalar_type() == torch::kInt32 &&
                  states.is_contiguous() && states.numel() == streams * nic::LANES,
              "states must be a contiguous int32 [S, 32] tensor on ", device);
  check(pos, torch::kInt64, device, "pos");
  check(status, torch::kInt32, device, "status");
  check_size(pos, streams, "pos");
  check_size(status, streams, "status");
}

void decode_streams(const Tensor& tables, int64_t count, const Tensor& data, const Tensor& offsets,
            const Tensor& indexes, const Tensor& seg_start, const Tensor& seg_len,
            const Tensor& out, const Tensor& states, const Tensor& pos, const Tensor& status) {
  const torch::Device device = data.device();
  TORCH_CHECK(device.is_cuda(), "data must be on a CUDA device");
  const int64_t streams = stream_count(offsets, "offsets");
  check(tables, torch::kInt32, device, "tables");
  check(data, torch::kUInt8, device, "data");
  check(indexes, torch::kInt32, device, "indexes");
  check(seg_start, torch::kInt64, device, "seg_start");
  check(seg_len, torch::kInt64, device, "seg_len");
  check(out, torch::kInt32, device, "out");
  check_size(seg_start, streams, "seg_start");
  check_size(seg_len, streams, "seg_len");
  check_size(out, indexes.numel(), "out");
  check_decoder(offsets, states, pos, status, device, streams);
  const c10::cuda::CUDAGuard guard(device);
  const nic::warp::DecodeArgs args{data.data_ptr<uint8_t>(),     offsets.data_ptr<int64_t>(),
                                   indexes.data_ptr<int32_t>(),  seg_start.data_ptr<int64_t>(),
                                   seg_len.data_ptr<int64_t>(),  out.data_ptr<int32_t>(),
                                   as_u32(states),               pos.data_ptr<int64_t>(),
                                   status.data_ptr<int32_t>()};
  launched(nic::cuda::launch_decode(tables.data_ptr<int32_t>(), static_cast<int32_t>(count),
                                    tables.numel() * 4, args, streams,
                                    c10::cuda::getCurrentCUDAStream().stream()));
}

void finish_streams(const Tensor& offsets, const Tensor& states, const Tensor& pos,
            const Tensor& status) {
  const torch::Device device = offsets.device();
  TORCH_CHECK(device.is_cuda(), "offsets must be on a CUDA device");
  const int64_t streams = stream_count(offsets, "offsets");
  check_decoder(offsets, states, pos, status, device, streams);
  const c10::cuda::CUDAGuard guard(device);
  const nic::warp::DecodeArgs args{nullptr,
                                   offsets.data_ptr<int64_t>(),
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   as_u32(states),
                                   pos.data_ptr<int64_t>(),
                                   status.data_ptr<int32_t>()};
  launched(nic::cuda::launch_finish(args, streams, c10::cuda::getCurrentCUDAStream().stream()));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Batched CUDA rANS coder of nicengine (docs/CUDA_CODER.md), for engine.coder.warp.";
  m.attr("MAX_WORDS_PER_VALUE") = nic::warp::MAX_WORDS_PER_VALUE;
  m.def("encode", &encode_streams, "Encodes every stream: (data, offsets [S + 1], status).");
  m.def("open", &open_streams, "Validates every stream's header: (states [S, 32], pos, status).");
  m.def("decode", &decode_streams, "Decodes one segment of every stream, in place.");
  m.def("finish", &finish_streams, "Checks that every stream ended exactly, in place.");
}
