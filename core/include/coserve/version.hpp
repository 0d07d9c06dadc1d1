#pragma once
namespace coserve {
// Set by CMake from the project version.
inline constexpr const char* kVersion = COSERVE_VERSION;
}  // namespace coserve
