#pragma once
// Static assets of the browser console: mapping a request path to a file inside the asset
// directory (never outside it), content types, and reading a file.
//
// Plain functions without I/O except read_asset(), which blocks (stat + read): call it through
// offload() from an I/O thread. All are thread-safe.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace coserve::web {

// The request target's path (no query) → a path relative to the asset dir ("/" → "index.html"),
// or nullopt when it must not be served: not absolute, bad percent-encoding, NUL or backslash,
// "." / ".." segments, hidden names (".git"), empty segments.
std::optional<std::string> asset_path(std::string_view target_path);

// The Content-Type for a file name, by extension; application/octet-stream when unknown.
std::string_view content_type(std::string_view file_name);

struct Asset {
  std::string content;
  std::string etag;  // strong validator from size and modification time
};

// Largest asset served; the console is a few small files.
inline constexpr std::uintmax_t kMaxAssetSize = 8 * 1024 * 1024;

// Reads `relative` under `root`. nullopt when it does not exist, is not a regular file, is too
// large, or resolves (through symlinks) outside `root`. Blocking.
std::optional<Asset> read_asset(const std::filesystem::path& root, const std::string& relative);

}  // namespace coserve::web
