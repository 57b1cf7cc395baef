// The CUDA coder's warp (rans_warp.h) on the host: the 32 lanes as loops. Used by the pybind11
// emulation module (rans_host_emulation.cpp) and the fuzz target (tests/fuzz/coder_fuzz.cpp).
#pragma once

#include "rans_warp.h"

namespace nic {

// The device's warp as 32 lane states; scan() is the loop that __ballot_sync + __popc replace.
template <class Lane>
struct HostWarp {
  Lane lanes[LANES] = {};

  template <class F>
  void each(F f) {
    for (int l = 0; l < LANES; ++l) f(l, lanes[l]);
  }
  uint32_t scan() {
    uint32_t total = 0;
    for (Lane& lane : lanes) {
      lane.rank = total;
      total += lane.flag;
    }
    return total;
  }
};

// Writes stream `stream`'s warp::encoded_bytes(c, stream) bytes to out: the compaction kernel's
// work for one stream.
inline void compact_host(const warp::CompactArgs& c, int64_t stream, uint8_t* out) {
  const int64_t units = warp::encoded_bytes(c, stream) / 2;
  for (int64_t i = 0; i < units; ++i) {
    const uint16_t e = warp::encoded_element(c, stream, i);
    out[2 * i] = static_cast<uint8_t>(e);
    out[2 * i + 1] = static_cast<uint8_t>(e >> 8);
  }
}

}  // namespace nic
