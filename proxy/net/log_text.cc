#include "net/log_text.h"

#include <cerrno>
#include <cstdio>

#include "net/fd_limit.h"

namespace popgate::net {

std::string LogSafe(std::string_view peer_text, std::size_t max_length) {
  std::string out;
  out.reserve(std::min(peer_text.size(), max_length) + 3);
  for (unsigned char c : peer_text) {
    if (out.size() >= max_length) {
      out += "...";
      break;
    }
    if (c < 0x20 || c == 0x7f || c == '\\') {
      char escaped[5];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

namespace {

bool IsErrno(const error_code& ec, int value) {
  return ec.category() == boost::system::system_category() && ec.value() == value;
}

}  // namespace

std::string DescribeError(const error_code& ec) {
  if (!ec || ec == asio::error::eof) return "connection closed";
  std::string text = ec.message();
  if (IsErrno(ec, EMFILE)) {
    auto limit = SoftDescriptorLimit();
    text += limit ? " (the process's descriptor limit, " + std::to_string(*limit) + ")"
                  : " (the process's descriptor limit)";
  } else if (IsErrno(ec, ENFILE)) {
    text += " (the system's limit, fs.file-max)";
  }
  return text;
}

bool IsResourceExhaustion(const error_code& ec) {
  return IsErrno(ec, EMFILE) || IsErrno(ec, ENFILE) || IsErrno(ec, ENOBUFS) || IsErrno(ec, ENOMEM);
}

}  // namespace popgate::net
