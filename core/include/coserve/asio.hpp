#pragma once
// Common aliases so headers stay short. Asio and Beast are compiled once (runtime/asio_impl.cpp).
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>

namespace coserve {
namespace asio = boost::asio;
using boost::system::error_code;
template <class T = void>
using awaitable = asio::awaitable<T>;
using asio::use_awaitable;
}  // namespace coserve

#include <boost/asio/as_tuple.hpp>

namespace coserve {
// Completion token for the hot path: errors come back as values, not exceptions.
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
}  // namespace coserve
