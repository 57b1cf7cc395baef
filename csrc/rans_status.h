// Why a coder refuses a stream: one code per reason and its message, written once here for the
// CPU coder (rans_cpu.cpp), the warp coder's per-stream status (rans_warp.h) and Python, which
// reads the messages from engine._rans (STATUS_MESSAGES, indexed by code).
#pragma once

#include <stdint.h>

#include "rans_core.h"

namespace nic {

enum Status : int32_t {
  kOk = 0,
  kTooShort,              // shorter than the header
  kOddLength,
  kBadInitialState,       // a header state below 2^16
  kReadPastEnd,
  kEscapeTooLong,         // nbits > MAX_ESCAPE_BITS
  kEscapeLengthMismatch,  // the chunks have fewer significant bits than nbits
  kEscapeOutOfRange,      // the escaped value does not fit int32
  kWordsLeft,             // finish: words left unread
  kBadFinalState,         // finish: a state other than 2^16
  kBadTableIndex,         // an argument error: the stream is left as it was
  kAlreadyFailed,         // the CPU decoder after an error (the warp coder repeats the error)
  kNumStatus
};

static_assert(HEADER_BYTES == 128 && MAX_ESCAPE_BITS == 40, "the messages below name them");

inline constexpr const char* STATUS_MESSAGES[kNumStatus] = {
    "ok",
    "corrupt stream: shorter than the 128-byte header",
    "corrupt stream: odd length",
    "corrupt stream: initial state < 2^16",
    "corrupt stream: read past the end of the data",
    "corrupt stream: escape longer than 40 bits",
    "corrupt stream: escape length does not match its bits",
    "corrupt stream: escaped value does not fit int32",
    "corrupt stream: words left after the last segment",
    "corrupt stream: final state is not 2^16",
    "table index out of range",
    "corrupt stream: the decoder already failed",
};

}  // namespace nic
