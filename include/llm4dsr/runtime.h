// Process-wide runtime settings: libtorch's intra-op thread count.
#pragma once

namespace llm4dsr {

// Sets libtorch's intra-op threads. n <= 0 means "the default": $LLM4DSR_NUM_THREADS if set,
// otherwise the number of hardware threads. Called once when the library is first used (and at
// Python import); call again to override.
void set_num_threads(int n);
int num_threads();

// The default set_num_threads(0) would pick (reads the environment variable each time).
int default_num_threads();

}  // namespace llm4dsr
