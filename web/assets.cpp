#include "assets.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <utility>

namespace coserve::web {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return std::nullopt;
    int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

}  // namespace

std::optional<std::string> asset_path(std::string_view target_path) {
  if (target_path.empty() || target_path.front() != '/') return std::nullopt;
  auto decoded = percent_decode(target_path);
  if (!decoded) return std::nullopt;
  std::string path = std::move(*decoded);
  if (path.find('\0') != std::string::npos || path.find('\\') != std::string::npos)
    return std::nullopt;
  if (path.back() == '/') path += "index.html";
  // Check every segment after the leading '/'.
  std::string_view rest = std::string_view(path).substr(1);
  std::size_t start = 0;
  while (start <= rest.size()) {
    auto slash = rest.find('/', start);
    auto segment = rest.substr(start, slash == std::string_view::npos ? rest.size() - start
                                                                      : slash - start);
    // "." and ".." are caught here too; hidden files (.git, .env) are never assets.
    if (segment.empty() || segment.front() == '.') return std::nullopt;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return std::string(rest);
}

std::string_view content_type(std::string_view file_name) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 14> kTypes{{
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".map", "application/json"},
      {".webmanifest", "application/manifest+json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".txt", "text/plain; charset=utf-8"},
      {".md", "text/plain; charset=utf-8"},
      {".woff2", "font/woff2"},
      {".wasm", "application/wasm"},
  }};
  auto dot = file_name.rfind('.');
  auto slash = file_name.rfind('/');
  if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash))
    return "application/octet-stream";
  auto ext = lower(file_name.substr(dot));
  for (auto& [suffix, type] : kTypes)
    if (ext == suffix) return type;
  return "application/octet-stream";
}

std::optional<Asset> read_asset(const std::filesystem::path& root, const std::string& relative) {
  std::error_code ec;
  auto real_root = std::filesystem::canonical(root, ec);
  if (ec) return std::nullopt;
  auto real = std::filesystem::canonical(real_root / relative, ec);
  if (ec) return std::nullopt;
  // A symlink inside the asset dir must not lead out of it.
  auto root_text = real_root.native() + "/";
  if (real.native().compare(0, root_text.size(), root_text) != 0) return std::nullopt;

  int fd = ::open(real.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uintmax_t>(st.st_size) > kMaxAssetSize) {
    ::close(fd);
    return std::nullopt;
  }
  Asset asset;
  asset.content.resize(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < asset.content.size()) {
    auto n = ::read(fd, asset.content.data() + done, asset.content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  asset.content.resize(done);  // a file that shrank while read is served as it was read
  char etag[64];
  std::snprintf(etag, sizeof etag, "\"%zx-%llx-%lx\"", done,
                static_cast<unsigned long long>(st.st_mtim.tv_sec),
                static_cast<unsigned long>(st.st_mtim.tv_nsec));
  asset.etag = etag;
  return asset;
}

}  // namespace coserve::web
