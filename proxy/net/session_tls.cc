#include <spdlog/spdlog.h>

#include "net/session.h"
#include "net/session_internal.h"
#include "pop3/capa.h"
#include "pop3/response.h"
#include "text/one_line.h"

// Session: TLS on both legs, STLS, and the plaintext-login policy.

namespace popgate::net {

using pop3::Verb;
using namespace session_internal;

asio::awaitable<bool> Session::StartClientTls() {
  SetClientDeadline(Clock::now() + kHandshakeTimeout);
  error_code ec;
  std::string failure;
  co_await client_.Handshake(*listener_.tls, ssl::stream_base::server, "", false, ec, failure);
  SetClientDeadline(Clock::time_point::max());
  if (ec) {
    spdlog::info("session {} client TLS handshake failed: {}", id_, text::Escaped(failure));
    End(EndReason::kClientTls);
    co_return false;
  }
  co_return true;
}

asio::awaitable<bool> Session::StartUpstreamTls(bool after_stls) {
  if (!config_.upstream.verify) {
    spdlog::warn("session {} upstream certificate NOT verified (--upstream-insecure)", id_);
  }
  SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
  error_code ec;
  std::string failure;
  co_await upstream_.Handshake(*upstream_context_.tls, ssl::stream_base::client,
                               upstream_context_.server_name, config_.upstream.verify, ec, failure);
  SetUpstreamDeadline(Clock::time_point::max());
  if (ec) {
    spdlog::warn("session {} upstream TLS{} failed: {}", id_, after_stls ? " (STLS)" : "",
                 text::Escaped(failure));
    if (end_reason_ != EndReason::kUpstreamTimeout) end_reason_ = EndReason::kUpstreamTls;
    co_return false;
  }
  co_return true;
}

// RFC 2595 §4 on the upstream leg: CAPA must list STLS, STLS must get +OK and nothing
// after it, then the handshake. Any failure ends the session: configured TLS is never
// skipped for plaintext.
asio::awaitable<bool> Session::NegotiateUpstreamStls() {
  auto fail = [this](const std::string& why) -> asio::awaitable<bool> {
    spdlog::warn("session {} upstream STLS failed: {}", id_, text::Escaped(why));
    co_await FailUpstream(EndReason::kUpstreamTls, kUpstreamTlsFailed);
    co_return false;
  };
  upstream_out_ = "CAPA\r\n";
  if (!co_await FlushUpstream()) {
    co_return false;
  }
  auto status = co_await ReadUpstreamLine();
  if (!status) {
    co_return false;
  }
  std::optional<std::string> capa;
  if (pop3::ClassifyStatus(*status) == pop3::Status::kOk) {
    capa = co_await ReadUpstreamContent(kMaxCapa, {});
    if (!capa) {
      co_return false;
    }
  }
  if (!capa || !pop3::Capabilities::Parse(*capa).Has("STLS")) {
    co_return co_await fail("the upstream does not offer STLS");
  }
  upstream_out_ = "STLS\r\n";
  if (!co_await FlushUpstream()) {
    co_return false;
  }
  auto answer = co_await ReadUpstreamLine();
  if (!answer) {
    co_return false;
  }
  if (pop3::ClassifyStatus(*answer) != pop3::Status::kOk) {
    co_return co_await fail("STLS refused: " + *answer);
  }
  if (!upstream_in_.empty()) {
    // Bytes after the +OK would be read as if they came over TLS: response injection.
    co_return co_await fail("data after the STLS answer (injection attempt?)");
  }
  if (!co_await StartUpstreamTls(true)) {
    co_await FailUpstream(EndReason::kUpstreamTls, kUpstreamTlsFailed);
    co_return false;
  }
  co_return true;
}

const char* Session::LoginRefusal(const pop3::Command& command) const {
  switch (command.verb) {
    case Verb::kUser:
    case Verb::kPass:
    case Verb::kApop:
    case Verb::kAuth:
      break;
    default:
      return nullptr;
  }
  if (!LoginAllowed()) return kPlaintextRefused;
  if (command.verb == Verb::kApop && upstream_via_stls_) return kApopUnavailable;
  if (command.verb == Verb::kPass && tls_restarted_ && !user_given_) {
    // The upstream may still hold a USER sent before STLS; after STLS the client must
    // name itself again (RFC 2595 §4: forget what came before TLS).
    return kUserFirst;
  }
  return nullptr;
}

bool Session::LoginAllowed() const {
  // Like Dovecot's disable_plaintext_auth: where TLS is on offer, credentials wait
  // for it, unless the client is on a trusted network. A plaintext-only listener is
  // the admin's explicit choice (warned about at start-up).
  return listener_.listener->tls == config::TlsMode::kNone || client_.is_tls() || client_trusted_;
}

// RFC 2595 §4 on the client leg. Everything the client sent after STLS and before the
// handshake is thrown away (a "STLS\r\nCAPA\r\n" in one segment gets no CAPA answer),
// and so is what popgate learnt before TLS.
asio::awaitable<bool> Session::StartClientStls() {
  bool ok = co_await FlushUpstream();
  if (ok) {
    ok = co_await WaitUntilAnswered();
  }
  if (ok) {
    ok = co_await WriteClient(kStlsGo);
  }
  if (!ok) {
    co_return false;
  }
  client_in_.clear();
  client_lines_.Reset();
  ok = co_await StartClientTls();
  if (ok) {
    user_given_ = false;
    tls_restarted_ = true;
  }
  co_return ok;
}

}  // namespace popgate::net
