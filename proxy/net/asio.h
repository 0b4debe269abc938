#pragma once
// The one place that includes Boost.Asio. GCC 12 compiles Boost 1.74's awaitable.hpp
// only with <utility> included first (STYLE.md), so the fix lives here.

// clang-format off: <utility> must stay first.
#include <utility>
// clang-format on

#include <boost/asio.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace popgate::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

// For operations whose failure is an expected outcome (a peer closing, a timeout):
// the error lands in `ec` instead of being thrown.
inline auto Capture(error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

}  // namespace popgate::net
