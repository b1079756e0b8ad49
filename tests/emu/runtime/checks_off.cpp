// The access checks' hooks in builds without them (the ASan+UBSan build,
// where AddressSanitizer owns the instrumentation callbacks).
#include "internal.h"

namespace emu::detail {

void checks_launch_begin(Grid&) {}
void checks_launch_end(Grid&) {}
void checks_block_begin(Block&) {}
void checks_block_end(Block&) {}
void checks_fiber_begin(Fiber&) {}
void checks_shared_poisoned(Block&, int) {}
void checks_atomic(void*, std::size_t, const Site&) {}

}  // namespace emu::detail
