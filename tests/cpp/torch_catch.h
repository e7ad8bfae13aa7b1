// Include this instead of <catch2/catch.hpp> in tests that use libtorch: c10's logging header
// defines its own CHECK(cond) macro, which silently replaces Catch2's CHECK when torch is included
// after Catch2 (assertions then stop being counted). Torch first, its CHECK removed, then Catch2.
#pragma once

#include <torch/torch.h>

#undef CHECK
#include <catch2/catch.hpp>
