#include "coserve/error.hpp"

#include <array>
#include <utility>

namespace coserve {
namespace {

constexpr std::array<std::pair<errc, std::string_view>, 17> kNames{{
    {errc::bad_frame, "bad_frame"},
    {errc::bad_request, "bad_request"},
    {errc::unknown_service, "unknown_service"},
    {errc::unknown_op, "unknown_op"},
    {errc::unauthenticated, "unauthenticated"},
    {errc::forbidden, "forbidden"},
    {errc::not_found, "not_found"},
    {errc::exists, "exists"},
    {errc::not_empty, "not_empty"},
    {errc::quota_exceeded, "quota_exceeded"},
    {errc::checksum_mismatch, "checksum_mismatch"},
    {errc::too_large, "too_large"},
    {errc::timeout, "timeout"},
    {errc::busy, "busy"},
    {errc::cancelled, "cancelled"},
    {errc::shutting_down, "shutting_down"},
    {errc::internal, "internal"},
}};

class Category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "coserve"; }
  std::string message(int value) const override {
    return std::string(to_string(static_cast<errc>(value)));
  }
};

}  // namespace

std::string_view to_string(errc code) noexcept {
  for (auto& [c, n] : kNames)
    if (c == code) return n;
  return "internal";
}

std::optional<errc> errc_from_string(std::string_view name) noexcept {
  for (auto& [c, n] : kNames)
    if (n == name) return c;
  return std::nullopt;
}

const boost::system::error_category& coserve_category() noexcept {
  static const Category category;
  return category;
}

boost::system::error_code make_error_code(errc code) noexcept {
  return {static_cast<int>(code), coserve_category()};
}

}  // namespace coserve
