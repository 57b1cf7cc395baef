// CUDA kernels of the batched rANS coder: one warp per stream, the algorithm of rans_warp.h
// (design: docs/CUDA_CODER.md). Free of torch so that CI can compile it with nvcc alone; the
// torch binding is rans_cuda_bindings.cpp.
#include <cuda_runtime.h>

#include "rans_warp.h"

namespace nic {
namespace {

constexpr int kMaxWarpsPerBlock = 8;
constexpr int kCompactThreads = 256;

// A thread of the warp that codes one stream: its lane's state, and the warp-wide prefix count.
template <class Lane>
struct DeviceWarp {
  Lane lane_state;
  int lane;

  template <class F>
  __device__ __forceinline__ void each(F f) {
    f(lane, lane_state);
  }
  __device__ __forceinline__ uint32_t scan() {
    const uint32_t mask = __ballot_sync(0xffffffffu, lane_state.flag);
    lane_state.rank = __popc(mask & ((1u << lane) - 1));
    return __popc(mask);
  }
};

// The tables, copied to shared memory by the whole block when kShared.
template <bool kShared>
__device__ __forceinline__ warp::TableView load_tables(const uint4* blob, int32_t count,
                                                       int32_t vectors) {
  if constexpr (kShared) {
    extern __shared__ uint4 shared_tables[];
    for (int32_t i = threadIdx.x; i < vectors; i += blockDim.x) shared_tables[i] = blob[i];
    __syncthreads();
    return warp::table_view(shared_tables, count);
  } else {
    return warp::table_view(blob, count);
  }
}

__device__ __forceinline__ int64_t warp_stream() {
  return static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
}

template <bool kShared>
__global__ void __launch_bounds__(kMaxWarpsPerBlock * 32)
    encode_kernel(const uint4* blob, int32_t count, int32_t vectors, warp::EncodeArgs args,
                  int64_t num_streams) {
  const warp::TableView tables = load_tables<kShared>(blob, count, vectors);
  const int64_t stream = warp_stream();
  if (stream >= num_streams) return;
  DeviceWarp<warp::EncodeLane> w{{}, static_cast<int>(threadIdx.x % 32)};
  warp::encode_one(w, tables, args, stream);
}

template <bool kShared>
__global__ void __launch_bounds__(kMaxWarpsPerBlock * 32)
    decode_kernel(const uint4* blob, int32_t count, int32_t vectors, warp::DecodeArgs args,
                  int64_t num_streams) {
  const warp::TableView tables = load_tables<kShared>(blob, count, vectors);
  const int64_t stream = warp_stream();
  if (stream >= num_streams) return;
  DeviceWarp<warp::DecodeLane> w{{}, static_cast<int>(threadIdx.x % 32)};
  warp::decode_one(w, tables, args, stream);
}

__global__ void __launch_bounds__(kMaxWarpsPerBlock * 32)
    open_kernel(warp::DecodeArgs args, int64_t num_streams) {
  const int64_t stream = warp_stream();
  if (stream >= num_streams) return;
  DeviceWarp<warp::DecodeLane> w{{}, static_cast<int>(threadIdx.x % 32)};
  warp::open_one(w, args, stream);
}

__global__ void __launch_bounds__(kMaxWarpsPerBlock * 32)
    finish_kernel(warp::DecodeArgs args, int64_t num_streams) {
  const int64_t stream = warp_stream();
  if (stream >= num_streams) return;
  DeviceWarp<warp::DecodeLane> w{{}, static_cast<int>(threadIdx.x % 32)};
  warp::finish_one(w, args, stream);
}

// One block per stream. Output offsets are even (every stream has an even length), so the
// stores are aligned 16-bit units.
__global__ void __launch_bounds__(kCompactThreads) compact_kernel(warp::CompactArgs args) {
  const int64_t stream = blockIdx.x;
  const int64_t begin = args.out_offsets[stream];
  const int64_t units = (args.out_offsets[stream + 1] - begin) / 2;
  uint16_t* out = reinterpret_cast<uint16_t*>(args.out + begin);
  for (int64_t i = threadIdx.x; i < units; i += blockDim.x) {
    out[i] = warp::encoded_element(args, stream, i);
  }
}

// Warps per block: few enough that small batches spread over all multiprocessors (a warp per
// stream is latency-bound, so it should not share an SM needlessly), at most kMaxWarpsPerBlock.
cudaError_t grid_for(int64_t num_streams, int* warps, unsigned* blocks) {
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  }
  if (err != cudaSuccess) return err;
  const int64_t per_sm = (num_streams + sms - 1) / sms;
  *warps = static_cast<int>(per_sm > kMaxWarpsPerBlock ? kMaxWarpsPerBlock : per_sm);
  *blocks = static_cast<unsigned>((num_streams + *warps - 1) / *warps);
  return cudaSuccess;
}

// Launches kernel<true> with the tables in dynamic shared memory when they fit in a block's
// opt-in limit, else kernel<false> reading them from global memory (through L1).
template <class Args>
using TableKernel = void (*)(const uint4*, int32_t, int32_t, Args, int64_t);

template <class Args>
cudaError_t launch_with_tables(TableKernel<Args> shared_kernel, TableKernel<Args> global_kernel,
                               const void* tables, int32_t table_count, int64_t table_bytes,
                               const Args& args, int64_t num_streams, cudaStream_t stream) {
  if (num_streams == 0) return cudaSuccess;
  if (table_bytes % 16 || table_bytes < 16 * static_cast<int64_t>(table_count)) {
    return cudaErrorInvalidValue;
  }
  int warps = 0, device = 0, optin = 0;
  unsigned blocks = 0;
  cudaError_t err = grid_for(num_streams, &warps, &blocks);
  if (err == cudaSuccess) err = cudaGetDevice(&device);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  }
  if (err != cudaSuccess) return err;
  const auto* blob = static_cast<const uint4*>(tables);
  const auto vectors = static_cast<int32_t>(table_bytes / 16);
  if (table_bytes <= optin) {
    const auto bytes = static_cast<size_t>(table_bytes);
    err = cudaFuncSetAttribute(shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(bytes));
    if (err != cudaSuccess) return err;
    shared_kernel<<<blocks, warps * 32, bytes, stream>>>(blob, table_count, vectors, args,
                                                         num_streams);
  } else {
    global_kernel<<<blocks, warps * 32, 0, stream>>>(blob, table_count, vectors, args,
                                                     num_streams);
  }
  return cudaGetLastError();
}

template <class Args>
cudaError_t launch_plain(void (*kernel)(Args, int64_t), const Args& args, int64_t num_streams,
                         cudaStream_t stream) {
  if (num_streams == 0) return cudaSuccess;
  int warps = 0;
  unsigned blocks = 0;
  const cudaError_t err = grid_for(num_streams, &warps, &blocks);
  if (err != cudaSuccess) return err;
  kernel<<<blocks, warps * 32, 0, stream>>>(args, num_streams);
  return cudaGetLastError();
}

}  // namespace

namespace cuda {

int launch_encode(const void* tables, int32_t table_count, int64_t table_bytes,
                  const warp::EncodeArgs& args, int64_t num_streams, cudaStream_t stream) {
  return launch_with_tables(encode_kernel<true>, encode_kernel<false>, tables, table_count,
                            table_bytes, args, num_streams, stream);
}

int launch_compact(const warp::CompactArgs& args, int64_t num_streams, cudaStream_t stream) {
  if (num_streams == 0) return cudaSuccess;
  compact_kernel<<<static_cast<unsigned>(num_streams), kCompactThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

int launch_open(const warp::DecodeArgs& args, int64_t num_streams, cudaStream_t stream) {
  return launch_plain(open_kernel, args, num_streams, stream);
}

int launch_decode(const void* tables, int32_t table_count, int64_t table_bytes,
                  const warp::DecodeArgs& args, int64_t num_streams, cudaStream_t stream) {
  return launch_with_tables(decode_kernel<true>, decode_kernel<false>, tables, table_count,
                            table_bytes, args, num_streams, stream);
}

int launch_finish(const warp::DecodeArgs& args, int64_t num_streams, cudaStream_t stream) {
  return launch_plain(finish_kernel, args, num_streams, stream);
}

}  // namespace cuda
}  // namespace nic
