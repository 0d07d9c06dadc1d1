#pragma once
// The closed list of error codes a client can see (docs/protocol.md). Each failure a user can
// cause maps to one of these; `internal` is for bugs only.
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

#include <boost/system/error_code.hpp>

namespace coserve {

enum class errc {
  bad_frame = 1,      // the bytes are not a valid frame (bad JSON, not an object)
  bad_request,        // a field is missing, has the wrong type, or is out of range
  unknown_service,
  unknown_op,
  unauthenticated,    // login needed, or login failed
  forbidden,          // logged in but not allowed (jail, policy)
  not_found,
  exists,
  not_empty,          // directory not empty
  quota_exceeded,
  checksum_mismatch,
  too_large,          // over a configured limit
  timeout,
  busy,               // try again later (throttled, too many in flight)
  cancelled,
  shutting_down,
  internal,           // a bug: logged on the server with details
};

std::string_view to_string(errc code) noexcept;
std::optional<errc> errc_from_string(std::string_view name) noexcept;
const boost::system::error_category& coserve_category() noexcept;
boost::system::error_code make_error_code(errc code) noexcept;

// Thrown by helpers deep in a request (field validation, path resolution) to abort it with a
// protocol error; the dispatcher turns it into an error reply. Services may also return
// Outcome::fail directly.
class Error : public std::runtime_error {
 public:
  Error(errc code, std::string message) : std::runtime_error(std::move(message)), code_(code) {}
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

}  // namespace coserve

template <>
struct boost::system::is_error_code_enum<coserve::errc> : std::true_type {};
