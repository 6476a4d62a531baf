#pragma once
// Short names and the completion token used throughout: coroutines that receive error codes
// as values (never exceptions) from every asynchronous operation.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace tp::http {

namespace asio = boost::asio;
template <typename T>
using Task = asio::awaitable<T>;

inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

}  // namespace tp::http
