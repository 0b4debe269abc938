#pragma once
// One client connection and its upstream connection.
//
// Three coroutines share the session's strand:
//  - ReadCommands (the client side) reads client lines, answers what popgate answers
//    itself, and forwards the rest upstream in canonical form, in order;
//  - RelayResponses (the upstream side) matches upstream responses first-in first-out
//    to the commands in `pending_`, decodes multi-line bodies and relays them;
//  - Watchdog enforces the client idle and upstream deadlines.
// Exactly one of the first two writes to the client at a time: ReadCommands writes only
// while nothing is pending (RelayResponses is then idle); otherwise its replies queue up
// in `pending_` behind the responses they must follow.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "filter/chain.h"
#include "filter/message_filter.h"
#include "mail/shared_bytes.h"
#include "net/asio.h"
#include "net/filtering.h"
#include "net/stream.h"
#include "pop3/command.h"
#include "pop3/line_reader.h"
#include "pop3/multiline.h"

namespace popgate::spool {
class HeldContent;
}  // namespace popgate::spool

namespace popgate::net {

class SessionRegistry;
// What the filter chain made of a message (filter/message_filter.h).
using FilterOutcome = filter::MessageOutcome;
// Work for the chain that ends by calling its argument with the outcome, on the session's
// thread (session_filter.cc).
using FilterJob = filter::OutcomeJob;

// What a session needs of its listener, shared by all the listener's sessions.
struct ListenerContext {
  const config::Listener* listener;
  ssl::context* tls = nullptr;  // set when the listener does TLS (implicit or STLS)
  // Whether a client address may log in without TLS (Dovecot's login_trusted_networks).
  std::function<bool(const asio::ip::address&)> trusted;
};

// What a session needs of the upstream, shared by all sessions.
struct UpstreamContext {
  std::vector<tcp::endpoint> endpoints;  // resolved once at start-up
  ssl::context* tls = nullptr;           // set when the upstream leg is TLS
  std::string server_name;               // SNI and the name the certificate must carry
};

// Why a session ended; logged in its closing line.
enum class EndReason {
  kQuit,             // the client sent QUIT and got the upstream's answer
  kClientClosed,     // the client went away (no QUIT upstream: nothing is deleted)
  kIdleTimeout,      // the client was silent for --idle-timeout
  kUpstreamTimeout,  // the upstream didn't connect, greet or answer in --upstream-timeout
  kUpstreamClosed,   // the upstream closed or failed
  kUpstreamInvalid,  // the upstream broke the protocol (garbage, overlong or unsolicited lines)
  kUpstreamUnavailable,
  kUpstreamTls,  // the upstream TLS handshake or STLS failed; never a plaintext fallback
  kClientTls,    // the client's TLS handshake failed
  kStopped,      // popgate is shutting down
  kClientError,
  kFilterUnavailable,  // a plugin with on_error = tempfail could not start
  kFilterLate,   // the chain withheld or changed a message after keep-alive bytes had gone out
  kNoResources,  // popgate itself ran out of descriptors or memory (EMFILE): neither peer's doing
};

const char* ToString(EndReason reason);

class Session : public std::enable_shared_from_this<Session> {
 public:
  using Clock = std::chrono::steady_clock;

  Session(tcp::socket client, const ListenerContext& listener, const UpstreamContext& upstream,
          const FilterContext& filters, const config::Config& config, SessionRegistry& registry,
          std::uint64_t id);
  ~Session();

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Starts the session's coroutines on its strand.
  void Start();
  // Ends the session from any thread (shutdown after the drain timeout).
  void Stop();

  std::uint64_t id() const { return id_; }

 private:
  // One command sent upstream, or a reply of popgate's own that must follow the
  // responses to the commands before it.
  struct Pending {
    std::optional<pop3::Command> command;  // empty: `local_reply` only
    std::string local_reply;
    // TOP widened to the whole message for the filter chain: the client asked for this
    // many body lines.
    std::optional<std::uint64_t> top_lines;
    bool internal = false;  // popgate's own keep-alive NOOP: its answer is not relayed
  };

  // Keep-alive bytes sent while the filter chain works on a message (session_filter.cc).
  struct KeepAlive {
    std::string status_line;   // the upstream's "+OK ...", sent with the first byte
    std::string_view content;  // the original as content (the header block at least)
    std::string source;        // bytes that may go ahead: its stuffed headers, made once needed
    std::size_t sent = 0;      // of `source`; the status line has gone too when > 0
    // What the client already has of the message: what gets sent must begin with it.
    std::string_view sent_bytes() const { return std::string_view(source).substr(0, sent); }
  };

  asio::awaitable<void> Run();
  asio::awaitable<bool> ConnectUpstream();
  asio::awaitable<bool> StartUpstreamTls(bool after_stls);
  asio::awaitable<bool> NegotiateUpstreamStls();
  asio::awaitable<bool> StartClientTls();
  asio::awaitable<bool> StartClientStls();
  bool LoginAllowed() const;
  // The -ERR line for a login command this session must refuse, or nullptr.
  const char* LoginRefusal(const pop3::Command& command) const;
  asio::awaitable<void> ReadCommands();
  asio::awaitable<void> RelayResponses();
  asio::awaitable<void> Watchdog();

  // Client side.
  asio::awaitable<std::optional<pop3::LineReader::Line>> ReadClientLine();
  asio::awaitable<bool> HandleClientLine(std::string line);
  asio::awaitable<bool> WaitUntilAnswered();
  asio::awaitable<bool> FlushUpstream();
  // Whether a client command may be filtered, and the command to forward: nullopt when a
  // plugin denied it (the client has been answered) or the session ended.
  asio::awaitable<std::optional<pop3::Command>> FilterCommand(pop3::Command command);
  // TOP through a whole-message chain asks the upstream for the whole message.
  void WidenTop(Pending& pending) const;
  asio::awaitable<bool> ReplyToClient(std::string reply);
  void Forward(pop3::Command command);

  // Upstream side.
  asio::awaitable<std::optional<std::string>> ReadUpstreamLine();
  // A whole multi-line body, un-stuffed, up to `limit` octets: the one CAPA gatherer, for
  // the upstream's CAPA before STLS and the client's CAPA. `during` as DecodeNextChunk's.
  asio::awaitable<std::optional<std::string>> ReadUpstreamContent(std::size_t limit,
                                                                  std::string_view during);
  // Reads the next upstream chunk of a multi-line response into `decoder`, appending to
  // `out`. Nullopt when the read failed (the failure has been handled; `during` names
  // the command in the log, or nothing is logged when empty).
  asio::awaitable<std::optional<pop3::MultiLineDecoder::Progress>> DecodeNextChunk(
      pop3::MultiLineDecoder& decoder, std::string& out, std::string_view during);
  asio::awaitable<bool> RelayMultiLine(const pop3::Command& command, std::string status_line);
  // Relays the rest of a multi-line response after client_out_ (already decoded), in
  // pieces, then its end.
  asio::awaitable<bool> StreamRest(pop3::MultiLineDecoder& decoder, bool done,
                                   std::string_view during);
  // Reads the rest of a multi-line response and drops it (a message withheld, or cut).
  asio::awaitable<bool> DrainRest(pop3::MultiLineDecoder& decoder, bool done,
                                  std::string_view during);
  // Sends client_out_ (the rest of a multi-line response) and the terminating line.
  asio::awaitable<bool> WriteEndOfResponse();
  // The filter chain (session_filter.cc): made and started with the session; RETR and TOP
  // through it.
  asio::awaitable<bool> StartFilters();
  bool FiltersMessage(const pop3::Command& command) const;
  asio::awaitable<bool> RelayFiltered(const Pending& pending, std::string status_line);
  asio::awaitable<bool> RelayWholeFiltered(const Pending& pending, std::string status_line);
  asio::awaitable<bool> RelayHeadersFiltered(const Pending& pending, std::string status_line);
  // Starts `job`, which completes on this session's thread (at once, for an inline chain);
  // while it takes longer than filter_keepalive, keeps both connections alive. Nullopt if
  // the session ended meanwhile.
  asio::awaitable<std::optional<FilterOutcome>> AwaitFilter(FilterJob job, KeepAlive& keepalive);
  asio::awaitable<bool> SendKeepAliveByte(KeepAlive& keepalive);
  asio::awaitable<void> SendUpstreamNoop();
  // Reads the rest of a message for the chain into `held` until it ends or outgrows
  // max_filter_size. Nullopt if the session ended; otherwise whether it is complete
  // (false: too large, or the spool failed and held.error() says why).
  asio::awaitable<std::optional<bool>> HoldRest(pop3::MultiLineDecoder& decoder,
                                                spool::HeldContent& held, bool done,
                                                std::string_view during);
  // Sends `head` (stuffed lines) after what keep-alive has sent of it, then `body`, then
  // the end. `body` is canonical content (a view of `source`), stuffed on the way.
  asio::awaitable<bool> DeliverFiltered(const KeepAlive& keepalive, std::string_view head,
                                        mail::SharedBytes source = {}, std::string_view body = {});
  // Sends client_out_ and then `content` (canonical, a view of `source`) stuffed, from
  // where it is held; if the two are small, only appends `content` to client_out_ for
  // the caller's next write.
  asio::awaitable<bool> WriteContent(mail::SharedBytes source, std::string_view content);
  asio::awaitable<bool> WithholdFiltered(const pop3::Command& command, const KeepAlive& keepalive,
                                         const FilterOutcome& outcome);
  asio::awaitable<bool> WriteClient(std::string_view bytes);
  void OnAnswered(const pop3::Command& command, bool ok);
  asio::awaitable<void> FailUpstream(EndReason reason, const char* reply);
  // FailUpstream for a failed upstream read: timed out, or closed.
  asio::awaitable<void> FailUpstreamRead();

  // Reads what `stream` has, appended to `into`. Returns the byte count, 0 on end or error.
  asio::awaitable<std::size_t> ReadAvailable(Stream& stream, std::string& into, error_code& ec);

  void SetClientDeadline(Clock::time_point when);
  void SetUpstreamDeadline(Clock::time_point when);
  void Notify();
  asio::awaitable<void> WaitForNotify();
  void End(EndReason reason);
  // The client connection failed with `ec` (reset, broken pipe): logs that the client
  // closed it, naming the response being relayed, and ends the session. The upstream
  // read this cuts short then fails too, but is not logged as the upstream's failure.
  void ClientFailed(const error_code& ec);
  // " during RETR response" while a client command's response is owed, else "".
  std::string During() const;

  Stream client_;
  Stream upstream_;
  const ListenerContext& listener_;
  const UpstreamContext& upstream_context_;
  const FilterContext& filters_;
  // Made when the session starts if plugins are configured; used on this session's thread
  // only (its hook calls end elsewhere and resume here), one operation at a time.
  std::shared_ptr<filter::ChainSession> chain_;
  // The quarantine's blocking writes run here, off the I/O threads.
  std::optional<asio::strand<asio::thread_pool::executor_type>> chain_strand_;
  bool chain_whole_ = false;     // some plugin needs whole messages
  bool chain_commands_ = false;  // some plugin has a command hook
  bool chain_messages_ = false;  // some plugin has a message hook
  const config::Config& config_;
  SessionRegistry& registry_;
  const std::uint64_t id_;

  pop3::State state_ = pop3::State::kAuthorization;
  std::deque<Pending> pending_;
  bool sasl_turn_ = false;   // the upstream sent an AUTH challenge: next client line is SASL
  bool responding_ = false;  // RelayResponses has begun writing the front response
  bool ended_ = false;
  bool client_trusted_ = false;  // from a trusted network: may log in without TLS
  bool upstream_via_stls_ = false;
  bool user_given_ = false;        // a USER was accepted since the session began or since STLS
  bool tls_restarted_ = false;     // the client did STLS
  bool upstream_writing_ = false;  // a write upstream is under way (FlushUpstream)
  std::optional<EndReason> end_reason_;

  std::string client_in_;     // client bytes not yet split into lines
  std::string upstream_in_;   // upstream bytes not yet consumed
  std::string client_out_;    // output buffer for relayed responses
  std::string upstream_out_;  // commands gathered for one write upstream
  std::string pending_user_;  // the user named by USER or AUTH, until the upstream accepts
  std::string sasl_mechanism_;
  int sasl_responses_ = 0;
  pop3::LineReader client_lines_;
  pop3::LineReader upstream_lines_;

  asio::steady_timer notify_;  // wakes ReadCommands when a response has been relayed
  asio::steady_timer watchdog_timer_;
  asio::steady_timer upstream_written_;  // wakes a FlushUpstream waiting for another
  Clock::time_point client_deadline_ = Clock::time_point::max();
  Clock::time_point upstream_deadline_ = Clock::time_point::max();

  // For the closing log line.
  std::string client_address_;
  std::string user_;
  std::uint64_t bytes_from_client_ = 0;
  std::uint64_t bytes_to_client_ = 0;
  Clock::time_point started_ = Clock::now();
};

}  // namespace popgate::net
