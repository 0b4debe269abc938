#include "net/log_text.h"

#include <cerrno>

#include "config/config.h"
#include "net/fd_limit.h"

namespace popgate::net {
namespace {

bool IsErrno(const error_code& ec, int value) {
  return ec.category() == boost::system::system_category() && ec.value() == value;
}

}  // namespace

std::string EndpointText(const tcp::endpoint& ep) {
  return config::FormatEndpoint(ep.address().to_string(), ep.port());
}

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
