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

}  // namespace nic
