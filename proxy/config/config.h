#pragma once
// The whole run-time configuration: built once at start-up from the command line and
// the TOML file, validated, then shared read-only by every session.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "filter/options.h"

namespace popgate::config {

enum class TlsMode { kNone, kStartTls, kImplicit };

struct Endpoint {
  std::string host;    // literal address or name; "[::1]" brackets already removed
  std::uint16_t port;  // 0 on a listener: the kernel picks one (tests use this)
};

// An address as every log line, audit record and SessionInfo writes it, the form the
// config reads: "192.0.2.1:110", "pop.example.com:995", "[2001:db8::1]:110". An IPv6
// address is bracketed, or its last group could not be told from the port. The one
// formatter for host and port: the core and the plugins must agree on it.
std::string FormatEndpoint(std::string_view host, std::uint16_t port);

struct Listener {
  Endpoint address;
  TlsMode tls = TlsMode::kNone;
  std::string cert_file;  // required when tls != none
  std::string key_file;
  // Where each came from, for errors found after parsing (a certificate that doesn't load,
  // an address already in use): "FILE:LINE: listen[1].cert", or the flag.
  std::string address_where = "--listen", cert_where = "--cert", key_where = "--key";
};

struct Upstream {
  Endpoint address;
  TlsMode tls = TlsMode::kNone;
  bool verify = true;       // verify chain and host name; --upstream-insecure clears it
  std::string ca_file;      // empty: the system trust store
  std::string server_name;  // empty: the host of `address`
  std::string ca_file_where = "--upstream-ca";  // for an error loading it
};

// One [[plugin]] table or --plugin SPEC. Plugins are not built yet (issue 4); the
// entries are parsed so the file format is stable, and main() refuses to start with any.
struct PluginSpec {
  std::string use;          // "spam_tag", "x.py", "python:pkg.mod", ...
  filter::Options options;  // every other key, with its TOML type
  std::string origin;       // "FILE:LINE" or "--plugin", for errors
  // "FILE:LINE: plugin[1].KEY" for each option: an error the plugin reports about an
  // option names the option's own line.
  std::map<std::string, std::string, std::less<>> option_where;
};

struct Timeouts {
  std::chrono::seconds upstream{60};  // connect, greeting, start of each response, stalls
  std::chrono::seconds idle{600};     // client silent with nothing outstanding (RFC 1939 §3)
  std::chrono::seconds drain{30};     // after SIGTERM, how long sessions may finish
  // A message still in the filter chain after this long: keep the client's connection
  // alive with the message's own first bytes (and the upstream's with NOOP).
  std::chrono::seconds filter_keepalive{10};
};

struct Limits {
  std::size_t max_sessions = 1000;       // past it: -ERR [SYS/TEMP] and close
  std::size_t max_command_line = 255;    // octets incl. CRLF (RFC 2449 §4)
  std::size_t max_auth_line = 16384;     // SASL lines (XOAUTH2 exceeds 255)
  std::size_t max_upstream_line = 4096;  // status lines and greeting from the upstream
  // A message for a whole-message filter chain is held in memory up to filter_memory and
  // spooled to an unnamed file in spool_dir beyond it, so memory per filtered RETR is
  // bounded by filter_memory; messages over max_filter_size pass unfiltered (logged).
  std::size_t filter_memory = 8 * 1024 * 1024;
  std::size_t max_filter_size = 64 * 1024 * 1024;
  std::string spool_dir = "/var/tmp";                          // on disk: /tmp is often RAM (tmpfs)
  std::string spool_dir_where = "limits.spool_dir (default)";  // "FILE:LINE: ..." or the flag
};

enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError };

struct Config {
  std::vector<Listener> listeners;  // at least one
  Upstream upstream;
  std::vector<PluginSpec> plugins;
  unsigned threads = 0;  // 0: one per core
  LogLevel log_level = LogLevel::kInfo;
  Timeouts timeouts;
  Limits limits;
  // Client networks (CIDR) that may log in without TLS on a listener that offers it,
  // like Dovecot's login_trusted_networks.
  std::vector<std::string> trusted_networks = {"127.0.0.0/8", "::1/128"};
  // Commands popgate does not know but relays (single-line responses), upper case.
  std::vector<std::string> pass_through_commands;
  // [quarantine] path: the Maildir for originals a plugin withholds; empty: not set.
  std::string quarantine_path;
  std::string quarantine_where = "quarantine.path";  // "FILE:LINE: quarantine.path"
  // `user` / --user: once listeners are bound and files opened, run as this account (an
  // existing one, never root; checked here). Empty: keep the user popgate was started as.
  std::string user;
  std::string user_where = "user";  // "FILE:LINE: user" or "--user"
  // -t: check the configuration as start-up would (plugins configured, certificates and
  // the quarantine usable, the switch to `user`), bind and connect nothing, and exit.
  bool check_only = false;
  std::string config_file;  // -c FILE; empty without one
};

// A configuration that cannot be used. what() is one line naming where and what:
// "popgate.toml:12: upstream.address: expected HOST:PORT, got \"pop.example\"" or
// "--upstream: expected HOST:PORT, got \"x\"".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown for --help / --version: what() is the text to print on stdout, exit status 0.
class HelpRequested : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses argv (and the -c FILE it names) into a validated Config. Values on the
// command line override the file's. Throws ConfigError or HelpRequested.
Config Parse(int argc, const char* const* argv);

// Parses a TOML document (for tests); `file_name` is used in error messages.
// Command-line values, if any, are applied by Parse() on top of this.
Config ParseToml(std::string_view toml_text, const std::string& file_name);

std::string ToString(TlsMode mode);

}  // namespace popgate::config
