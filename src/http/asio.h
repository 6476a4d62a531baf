#pragma once
// Short names used throughout: every asynchronous object is bound to an io_context executor
// (no type-erased executors on the data path), and coroutines receive error codes as
// values, never exceptions.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>

namespace tp::http {

namespace asio = boost::asio;
using Executor = asio::io_context::executor_type;
template <typename T>
using Task = asio::awaitable<T, Executor>;
using Socket = asio::basic_stream_socket<asio::ip::tcp, Executor>;
using Acceptor = asio::basic_socket_acceptor<asio::ip::tcp, Executor>;
using Timer = asio::basic_waitable_timer<std::chrono::steady_clock,
                                         asio::wait_traits<std::chrono::steady_clock>, Executor>;

inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable_t<Executor>{});

}  // namespace tp::http
