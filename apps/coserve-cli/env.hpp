#pragma once
// What every command needs: the connection, a pool for blocking file work (hashing, reads and
// writes of transfer chunks) so the I/O thread keeps serving the socket, and the output mode.
#include <boost/asio/thread_pool.hpp>

#include "connection.hpp"

namespace coserve::cli {

struct Env {
  Connection& conn;
  asio::thread_pool& pool;
  bool quiet = false;
  TlsChoice tls;  // from --tls / --ca-file: the shell's `open` starts from it
};

}  // namespace coserve::cli
