// libFuzzer target for the configuration file (config/config.h): the input as the TOML
// text of popgate's -c FILE, through ParseToml (toml++'s parser, then popgate's reading
// and validation of every key).
//
// Invariants (config/config.h, the head of config.cc):
// - the result is a Config or a ConfigError, never another exception, never a crash;
// - a ConfigError is one printable line that names the file and a line of it
//   ("fuzz.toml:LINE[:COLUMN]: ..."), a line the input has; the one error without a
//   place is a missing upstream, which has no line to name;
// - a Config is valid: at least one listener, TLS settings consistent, an upstream
//   port, every number within its documented range, every "where" naming a line;
// - parsing is deterministic: the same text gives the same outcome.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>

#include "config/config.h"
#include "fuzz_support.h"

namespace {

using popgate::config::Config;
using popgate::config::ConfigError;
using popgate::config::ParseToml;
using popgate::config::TlsMode;

const std::string kFile = "fuzz.toml";
constexpr std::string_view kNoUpstream =
    "no upstream configured; use --upstream HOST:PORT or [upstream] address";

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// "fuzz.toml:LINE" at the start of `where`, LINE within the input; the rest after it.
bool NamesLine(std::string_view where, std::size_t lines, std::string_view& rest) {
  if (!where.starts_with(kFile + ":")) return false;
  where.remove_prefix(kFile.size() + 1);
  std::size_t digits = 0;
  std::size_t line = 0;
  while (digits < where.size() && IsDigit(where[digits]) && digits < 9) {
    line = line * 10 + static_cast<std::size_t>(where[digits] - '0');
    ++digits;
  }
  if (digits == 0 || line < 1 || line > lines) return false;
  rest = where.substr(digits);
  return true;
}

void CheckError(std::string_view message, std::size_t lines) {
  FUZZ_CHECK(!message.empty());
  for (char c : message) {
    auto u = static_cast<unsigned char>(c);
    FUZZ_CHECK(u >= 0x20 && u != 0x7f);  // one line: control bytes come escaped
  }
  if (message == kNoUpstream) return;
  std::string_view rest;
  if (!NamesLine(message, lines, rest)) {
    std::fprintf(stderr, "error without file and line: %.*s\n", static_cast<int>(message.size()),
                 message.data());
  }
  FUZZ_CHECK(NamesLine(message, lines, rest));
  // A syntax error adds the column.
  if (rest.starts_with(':') && rest.size() > 1 && IsDigit(rest[1])) {
    rest.remove_prefix(1);
    while (!rest.empty() && IsDigit(rest.front())) rest.remove_prefix(1);
  }
  FUZZ_CHECK(rest.starts_with(": ") && rest.size() > 2);
}

void CheckWhere(std::string_view where, std::size_t lines) {
  std::string_view rest;
  FUZZ_CHECK(NamesLine(where, lines, rest));
}

void CheckConfig(const Config& config, std::size_t lines) {
  FUZZ_CHECK(!config.listeners.empty());
  for (const auto& listener : config.listeners) {
    FUZZ_CHECK(!listener.address.host.empty());
    FUZZ_CHECK((listener.tls != TlsMode::kNone) == !listener.cert_file.empty());
    FUZZ_CHECK((listener.tls != TlsMode::kNone) == !listener.key_file.empty());
  }
  FUZZ_CHECK(config.upstream.address.port >= 1);
  FUZZ_CHECK(!config.upstream.address.host.empty());
  if (config.upstream.tls == TlsMode::kNone) {
    FUZZ_CHECK(config.upstream.ca_file.empty() && config.upstream.server_name.empty());
  }
  FUZZ_CHECK(config.threads <= 256);
  for (auto timeout : {config.timeouts.upstream, config.timeouts.idle, config.timeouts.drain,
                       config.timeouts.filter_keepalive}) {
    FUZZ_CHECK(timeout.count() >= 1 && timeout.count() <= 24 * 60 * 60);
  }
  const auto& limits = config.limits;
  FUZZ_CHECK(limits.max_sessions >= 1 && limits.max_sessions <= 1'000'000);
  FUZZ_CHECK(limits.max_upstream_line >= 512 && limits.max_upstream_line <= (1u << 20));
  FUZZ_CHECK(limits.max_auth_line >= 255 && limits.max_auth_line <= (1u << 20));
  FUZZ_CHECK(limits.filter_memory <= limits.max_filter_size);
  FUZZ_CHECK(limits.max_filter_size >= 1024 && limits.max_filter_size <= (1u << 30));
  FUZZ_CHECK(!limits.spool_dir.empty());
  for (const auto& name : config.pass_through_commands) {
    FUZZ_CHECK(!name.empty() && name.size() <= 16);
    for (char c : name) FUZZ_CHECK((c >= 'A' && c <= 'Z') || IsDigit(c));
  }
  for (const auto& network : config.trusted_networks) {
    FUZZ_CHECK(network.find('/') != std::string::npos);
  }
  for (const auto& plugin : config.plugins) {
    FUZZ_CHECK(!plugin.use.empty());
    CheckWhere(plugin.origin, lines);
    FUZZ_CHECK(plugin.options.size() == plugin.option_where.size());
    for (const auto& [key, where] : plugin.option_where) {
      FUZZ_CHECK(plugin.options.contains(key));
      CheckWhere(where, lines);
    }
  }
  if (!config.quarantine_path.empty()) CheckWhere(config.quarantine_where, lines);
}

// The outcome as text: what() of the error, or a summary of the Config.
std::string Outcome(std::string_view text, std::size_t lines) {
  try {
    const Config config = ParseToml(text, kFile);
    CheckConfig(config, lines);
    return "ok " + std::to_string(config.listeners.size()) + " " +
           std::to_string(config.plugins.size()) + " " + config.upstream.address.host;
  } catch (const ConfigError& error) {
    CheckError(error.what(), lines);
    return std::string("error ") + error.what();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "not a ConfigError: %s\n", error.what());
    FUZZ_CHECK(!"ParseToml threw something else than ConfigError");
  } catch (...) {
    FUZZ_CHECK(!"ParseToml threw something else than ConfigError");
  }
  return {};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view data(reinterpret_cast<const char*>(bytes), size);
  // A position may be just past the last line (an error at the end of the text).
  std::size_t lines = 1;
  for (char c : data) lines += c == '\n';
  const std::string first = Outcome(data, lines);
  FUZZ_CHECK(Outcome(data, lines) == first);
  return 0;
}
