// Command line and TOML file into one validated Config. Every value is checked here, once, so
// the rest of popgate can trust the Config. Every error is one line naming the file, line and
// key (or the flag), because that line is all an admin sees when start-up fails.

#include "config/config.h"

#include <arpa/inet.h>
#include <pwd.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <optional>
#include <sstream>
#include <utility>

#include "text/errno_text.h"
#include "text/one_line.h"

#ifndef POPGATE_VERSION
#define POPGATE_VERSION "0.1.0"  // the build may pass the project's version instead
#endif

namespace popgate::config {
namespace {

constexpr std::string_view kVersion = "popgate " POPGATE_VERSION;
constexpr std::string_view kNoUpstream =
    "no upstream configured; use --upstream HOST:PORT or [upstream] address";

constexpr std::size_t kMaxHostName = 253;    // RFC 1035 §2.3.4, in its dotted text form
constexpr std::size_t kMaxCommandName = 16;  // RFC 2449 §4 allows 40; real extensions are short

// An inclusive range for an integer setting, with the unit named in error messages.
struct IntRange {
  std::int64_t low;
  std::int64_t high;
  std::string_view unit;
};

// A timeout longer than a day is surely a typo (minutes taken for seconds, an extra zero).
constexpr IntRange kTimeoutRange{1, 24 * 60 * 60, " seconds"};
constexpr IntRange kThreadsRange{0, 256, ""};
constexpr IntRange kSessionsRange{1, 1'000'000, ""};
// RFC 1939 §3: a response line may be 512 octets; more than 1 MiB is no status line.
constexpr IntRange kUpstreamLineRange{512, 1 << 20, " bytes"};
constexpr IntRange kFilterSizeRange{1024, 1024LL * 1024 * 1024, " bytes"};
// An AUTH line is never held to less than a command line (255 octets, RFC 2449 §4).
constexpr IntRange kAuthLineRange{255, 1 << 20, " bytes"};

// Commands popgate itself implements (RFC 1939, 2449, 2595, 5034). Relaying one blindly would
// bypass the proxy's own handling, e.g. STLS would start TLS the proxy knows nothing of.
constexpr std::array<std::string_view, 15> kHandledCommands{"USER", "PASS", "APOP", "QUIT", "STAT",
                                                            "LIST", "RETR", "DELE", "NOOP", "RSET",
                                                            "TOP",  "UIDL", "CAPA", "STLS", "AUTH"};

template <typename T>
struct Named {
  std::string_view name;
  T value;
};

constexpr std::array<Named<TlsMode>, 3> kTlsModes{{
    {"none", TlsMode::kNone},
    {"starttls", TlsMode::kStartTls},
    {"implicit", TlsMode::kImplicit},
}};

constexpr std::array<Named<LogLevel>, 5> kLogLevels{{
    {"trace", LogLevel::kTrace},
    {"debug", LogLevel::kDebug},
    {"info", LogLevel::kInfo},
    {"warn", LogLevel::kWarn},
    {"error", LogLevel::kError},
}};

// ------------------------------------------------------------------------ one-line messages

// Values in messages may hold newlines or other control characters (TOML strings can):
// text::Escaped keeps what() on one line. A ConfigError shows the whole value.
std::string Printable(std::string_view text) { return text::Escaped(text, text::kWhole); }

// A user's value in double quotes, escaped so that the quotes still delimit it (Escaped
// has already doubled every backslash).
std::string Quoted(std::string_view text) {
  std::string out = "\"";
  for (const char c : Printable(text)) {
    if (c == '"') out += '\\';
    out += c;
  }
  return out + "\"";
}

// CLI11's messages sometimes span lines; a ConfigError never does. Its line breaks join
// the lines into one sentence ("; ") rather than show up as "\n", as Printable would.
std::string OneLine(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '\n' || c == '\r') {
      if (!out.empty() && out.back() != ' ') out += "; ";
    } else {
      out += c;
    }
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == ';')) out.pop_back();
  return Printable(out);
}

// `where` is "FILE:LINE: key" or "--flag"; empty when nothing more precise can be named.
[[noreturn]] void Fail(std::string_view where, std::string_view message) {
  std::string text(where);
  if (!text.empty()) text += ": ";
  text += message;
  throw ConfigError(text);
}

// ------------------------------------------------ value parsers shared by flags and the file

// <cctype> wants unsigned char values; these wrappers keep the casts in one place.
bool IsDigit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }
bool IsAlnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool IsHexDigit(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

bool IsHostChar(char c) { return IsAlnum(c) || c == '-' || c == '.' || c == '_'; }

bool IsHostName(std::string_view host) {
  return !host.empty() && host.size() <= kMaxHostName && std::ranges::all_of(host, IsHostChar);
}

// The inside of "[...]" (RFC 3986 §3.2.2), plus a zone ("fe80::1%eth0") for link-local use.
bool IsIpv6Literal(std::string_view host) {
  const std::size_t percent = host.find('%');
  const std::string_view address = host.substr(0, percent);
  const bool address_ok =
      address.find(':') != std::string_view::npos &&
      std::ranges::all_of(address, [](char c) { return IsHexDigit(c) || c == ':' || c == '.'; });
  if (!address_ok || percent == std::string_view::npos) return address_ok;
  const std::string_view zone = host.substr(percent + 1);
  return !zone.empty() && std::ranges::all_of(zone, IsHostChar);
}

std::optional<std::int64_t> ParseInteger(std::string_view text) {
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error != std::errc() || stop != end) return std::nullopt;
  return value;
}

std::int64_t CheckRange(std::int64_t value, const IntRange& range, std::string_view where) {
  if (value < range.low || value > range.high) {
    Fail(where, "must be " + std::to_string(range.low) + ".." + std::to_string(range.high) +
                    std::string(range.unit) + ", got " + std::to_string(value));
  }
  return value;
}

std::int64_t ParseIntegerFlag(std::string_view text, const IntRange& range, std::string_view flag) {
  const std::optional<std::int64_t> value = ParseInteger(text);
  if (!value) Fail(flag, "expected an integer, got " + Quoted(text));
  return CheckRange(*value, range, flag);
}

// "host:port", "1.2.3.4:port" or "[v6]:port". `min_port` is 0 for listeners (the kernel picks
// one) and 1 for the upstream.
Endpoint ParseEndpoint(std::string_view text, std::uint16_t min_port, std::string_view where) {
  const std::string expected = "expected HOST:PORT, got " + Quoted(text);
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos || text.substr(close + 1, 1) != ":") Fail(where, expected);
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    if (!IsIpv6Literal(host)) Fail(where, "expected an IPv6 address in [], got " + Quoted(text));
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) Fail(where, expected);
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      Fail(where, expected + " (put an IPv6 address in brackets: [::1]:110)");
    }
    if (!IsHostName(host)) Fail(where, expected);
  }
  if (port.empty() || port.size() > 5 || !std::ranges::all_of(port, IsDigit)) {
    Fail(where, expected);
  }
  const std::int64_t number = *ParseInteger(port);
  if (number < min_port || number > 65535) {
    Fail(where, "port must be " + std::to_string(min_port) + "..65535, got " + Quoted(text));
  }
  return Endpoint{std::string(host), static_cast<std::uint16_t>(number)};
}

template <typename T, std::size_t N>
T ParseEnum(std::string_view text, const std::array<Named<T>, N>& names, std::string_view where) {
  std::string choices;
  for (const Named<T>& named : names) {
    if (named.name == text) return named.value;
    if (!choices.empty()) choices += '|';
    choices += named.name;
  }
  Fail(where, "expected " + choices + ", got " + Quoted(text));
}

std::string ParseFileName(std::string_view text, std::string_view where) {
  if (text.empty()) Fail(where, "expected a file name, got \"\"");
  return std::string(text);
}

std::string ParseServerName(std::string_view text, std::string_view where) {
  if (!IsHostName(text) && !IsIpv6Literal(text)) {
    Fail(where, "expected a host name, got " + Quoted(text));
  }
  return std::string(text);
}

// "10.0.0.0/8", "::1/128", or a bare address (a single host). Returned with its prefix,
// in the form Asio's make_network_v4/v6 accept.
std::string ParseNetwork(std::string_view text, std::string_view where) {
  std::string address(text.substr(0, text.find('/')));
  bool v6 = address.find(':') != std::string::npos;
  unsigned char buffer[16];
  if (inet_pton(v6 ? AF_INET6 : AF_INET, address.c_str(), buffer) != 1) {
    Fail(where, "expected a network such as 10.0.0.0/8 or ::1/128, got " + Quoted(text));
  }
  const int max_prefix = v6 ? 128 : 32;
  if (text.find('/') == std::string_view::npos) return address + "/" + std::to_string(max_prefix);
  auto prefix = ParseInteger(text.substr(text.find('/') + 1));
  if (!prefix || *prefix < 0 || *prefix > max_prefix) {
    Fail(where,
         "expected a prefix length 0-" + std::to_string(max_prefix) + ", got " + Quoted(text));
  }
  return address + "/" + std::to_string(*prefix);
}

std::string ParsePluginSpec(std::string_view text, std::string_view where) {
  if (text.empty()) Fail(where, "expected a plugin name, file.py or python:module, got \"\"");
  return std::string(text);
}

std::string ParseCommandName(std::string_view text, std::string_view where) {
  if (text.empty() || text.size() > kMaxCommandName || !std::ranges::all_of(text, IsAlnum)) {
    Fail(where, "expected a command name of 1-16 letters and digits, got " + Quoted(text));
  }
  std::string name(text);
  std::ranges::transform(name, name.begin(),
                         [](char c) { return static_cast<char>(std::toupper(c)); });
  if (std::ranges::find(kHandledCommands, name) != kHandledCommands.end()) {
    Fail(where, name + " is handled by popgate itself and cannot be passed through");
  }
  return name;
}

// An account to run as once start-up is done (`user`, --user). It must exist now, not only
// when the switch is made after binding: a typo is a config error naming its line. Root
// is refused: "running as root" is what leaving `user` out means, and it is logged then.
std::string ParseUser(std::string_view text, std::string_view where) {
  if (text.empty()) Fail(where, "expected a user name, got \"\"");
  const std::string name(text);
  passwd entry{};
  passwd* found = nullptr;
  std::array<char, 16384> buffer{};
  const int error = ::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (error != 0) {
    Fail(where, "cannot look up user " + Quoted(text) + ": " + std::strerror(error));
  }
  if (found == nullptr) Fail(where, "no such user " + Quoted(text));
  if (found->pw_uid == 0) {
    Fail(where, Quoted(text) +
                    " is root (uid 0), which drops no privileges; name an unprivileged user, "
                    "or leave user out");
  }
  return name;
}

// TLS that is configured is never silently skipped (DESIGN.md): TLS without a certificate is an
// error, and so is a certificate without TLS, which means the admin believes TLS is on.
// `tls_name` is "tls" (in the file) or "--listen-tls".
void CheckListenerTls(const Listener& listener, const std::string& tls_name,
                      std::string_view cert_where, std::string_view key_where) {
  const bool tls = listener.tls != TlsMode::kNone;
  if (tls && listener.cert_file.empty()) {
    Fail(cert_where, "required when " + tls_name + " is " + ToString(listener.tls));
  }
  if (tls && listener.key_file.empty()) {
    Fail(key_where, "required when " + tls_name + " is " + ToString(listener.tls));
  }
  if (!tls && !listener.cert_file.empty()) Fail(cert_where, "set, but " + tls_name + " is none");
  if (!tls && !listener.key_file.empty()) Fail(key_where, "set, but " + tls_name + " is none");
}

// Loopback only: exposing a proxy that may speak plaintext must be a decision.
Listener DefaultListener() { return Listener{Endpoint{"127.0.0.1", 1110}, TlsMode::kNone, "", ""}; }

// ----------------------------------------------------------------------------- the draft

// A Config being assembled from the file and then the flags, with where the values checked
// against each other came from, so a check spanning both can name the right place.
struct Draft {
  Config config;
  bool has_upstream = false;
  std::string upstream_table_where;  // "FILE:LINE: upstream.address" when [upstream] exists
  std::string ca_file_where;
  std::string server_name_where;
  std::string filter_memory_where = "limits.filter_memory (default)";
};

// ------------------------------------------------------------------------------- TOML file

std::string TypeName(toml::node_type type) {
  switch (type) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

// A plugin option as its typed value. Dates and times have no type of their own in the
// plugin interface: they arrive as their TOML text.
filter::OptionValue ToOptionValue(const toml::node& node) {
  if (const toml::table* table = node.as_table()) {
    filter::OptionValue::Table entries;
    for (const auto& [key, value] : *table) {
      entries.emplace_back(std::string(key.str()), ToOptionValue(value));
    }
    return entries;
  }
  if (const toml::array* array = node.as_array()) {
    filter::OptionValue::Array items;
    for (const toml::node& element : *array) items.push_back(ToOptionValue(element));
    return items;
  }
  if (auto text = node.value_exact<std::string>()) return *text;
  if (auto number = node.value_exact<std::int64_t>()) return *number;
  if (auto number = node.value_exact<double>()) return *number;
  if (auto flag = node.value_exact<bool>()) return *flag;
  std::ostringstream out;
  out << toml::toml_formatter{node, toml::format_flags::allow_unicode_strings};
  return out.str();
}

// One TOML table with its dotted path ("upstream", "listen[1]"), for reading typed values and
// naming them in errors as "FILE:LINE: path.key".
class TableReader {
 public:
  TableReader(const toml::table& table, std::string path, const std::string& file)
      : table_(&table), path_(std::move(path)), file_(&file) {}

  const toml::table& table() const { return *table_; }

  // "FILE:LINE" of the table itself ([upstream], [[plugin]]).
  std::string Origin() const { return At(table_->source()); }

  // "FILE:LINE: path.key": the value's line, or the table's when the key is absent.
  std::string Where(std::string_view key) const {
    const toml::node* node = table_->get(key);
    return At(node ? node->source() : table_->source()) + ": " + Path(key);
  }

  // Typos must not be silently ignored: any key not in `known` is an error, reported at the
  // first such key in the file, before anything else, since it usually explains the rest.
  void OnlyKeys(std::initializer_list<std::string_view> known) const {
    const toml::key* unknown = nullptr;
    for (const auto& [key, value] : *table_) {
      if (std::ranges::find(known, key.str()) != known.end()) continue;
      if (!unknown || key.source().begin.line < unknown->source().begin.line) unknown = &key;
    }
    if (!unknown) return;
    std::string list;
    for (const std::string_view name : known) {
      if (!list.empty()) list += ", ";
      list += name;
    }
    Fail(At(unknown->source()) + ": " + Path(unknown->str()),
         "unknown key (expected one of: " + list + ")");
  }

  std::optional<std::string> String(std::string_view key) const {
    return Value<std::string>(key, "a string");
  }
  std::optional<bool> Bool(std::string_view key) const { return Value<bool>(key, "a boolean"); }
  std::optional<std::int64_t> Integer(std::string_view key, const IntRange& range) const {
    const std::optional<std::int64_t> value = Value<std::int64_t>(key, "an integer");
    if (value) CheckRange(*value, range, Where(key));
    return value;
  }

  std::string RequireString(std::string_view key) const {
    std::optional<std::string> value = String(key);
    if (!value) Fail(Where(key), "missing");
    return *std::move(value);
  }

  std::optional<TableReader> Table(std::string_view key) const {
    const toml::node* node = table_->get(key);
    if (!node) return std::nullopt;
    const toml::table* table = node->as_table();
    if (!table) WrongType(key, *node, "a table");
    return TableReader(*table, Path(key), *file_);
  }

  // [[key]] tables. A single [key] table is a common slip, so its message shows the syntax.
  std::vector<TableReader> Tables(std::string_view key) const {
    std::vector<TableReader> tables;
    const toml::node* node = table_->get(key);
    if (!node) return tables;
    const toml::array* array = node->as_array();
    if (!array) WrongType(key, *node, "an array of tables ([[" + std::string(key) + "]])");
    for (std::size_t i = 0; i < array->size(); ++i) {
      const toml::node& element = *array->get(i);
      const std::string path = Path(key) + "[" + std::to_string(i) + "]";
      if (!element.is_table()) {
        Fail(At(element.source()) + ": " + path,
             "expected a table, got " + TypeName(element.type()));
      }
      tables.emplace_back(*element.as_table(), path, *file_);
    }
    return tables;
  }

  // An array of strings, each with its own "FILE:LINE: path.key[i]" for checking it.
  std::vector<std::pair<std::string, std::string>> Strings(std::string_view key) const {
    std::vector<std::pair<std::string, std::string>> strings;
    const toml::node* node = table_->get(key);
    if (!node) return strings;
    const toml::array* array = node->as_array();
    if (!array) WrongType(key, *node, "an array of strings");
    for (std::size_t i = 0; i < array->size(); ++i) {
      const toml::node& element = *array->get(i);
      std::string where = At(element.source()) + ": " + Path(key) + "[" + std::to_string(i) + "]";
      if (!element.is_string()) Fail(where, "expected a string, got " + TypeName(element.type()));
      strings.emplace_back(element.as_string()->get(), std::move(where));
    }
    return strings;
  }

 private:
  template <typename T>
  std::optional<T> Value(std::string_view key, std::string_view expected) const {
    const toml::node* node = table_->get(key);
    if (!node) return std::nullopt;
    // as<T>() rather than value<T>(): the latter converts, and 1.5 must not pass for 1.
    const toml::value<T>* value = node->as<T>();
    if (!value) WrongType(key, *node, expected);
    return value->get();
  }

  [[noreturn]] void WrongType(std::string_view key, const toml::node& node,
                              std::string_view expected) const {
    Fail(Where(key), "expected " + std::string(expected) + ", got " + TypeName(node.type()));
  }

  std::string At(const toml::source_region& region) const {
    if (region.begin.line == 0) return Printable(*file_);  // a node without a position
    return Printable(*file_) + ":" + std::to_string(region.begin.line);
  }

  std::string Path(std::string_view key) const {
    return path_.empty() ? Printable(key) : path_ + "." + Printable(key);
  }

  const toml::table* table_;
  std::string path_;
  const std::string* file_;
};

Listener ReadListener(const TableReader& table) {
  table.OnlyKeys({"address", "tls", "cert", "key"});
  Listener listener;
  listener.address = ParseEndpoint(table.RequireString("address"), 0, table.Where("address"));
  if (auto tls = table.String("tls")) listener.tls = ParseEnum(*tls, kTlsModes, table.Where("tls"));
  if (auto cert = table.String("cert")) {
    listener.cert_file = ParseFileName(*cert, table.Where("cert"));
  }
  if (auto key = table.String("key")) listener.key_file = ParseFileName(*key, table.Where("key"));
  CheckListenerTls(listener, "tls", table.Where("cert"), table.Where("key"));
  listener.address_where = table.Where("address");
  listener.cert_where = table.Where("cert");
  listener.key_where = table.Where("key");
  return listener;
}

void ReadUpstream(const TableReader& table, Draft& draft) {
  table.OnlyKeys({"address", "tls", "verify", "server_name", "ca_file"});
  Upstream& upstream = draft.config.upstream;
  draft.upstream_table_where = table.Where("address");
  if (auto address = table.String("address")) {
    upstream.address = ParseEndpoint(*address, 1, table.Where("address"));
    draft.has_upstream = true;
  }
  if (auto tls = table.String("tls")) upstream.tls = ParseEnum(*tls, kTlsModes, table.Where("tls"));
  if (auto verify = table.Bool("verify")) upstream.verify = *verify;
  if (auto name = table.String("server_name")) {
    draft.server_name_where = table.Where("server_name");
    upstream.server_name = ParseServerName(*name, draft.server_name_where);
  }
  if (auto ca_file = table.String("ca_file")) {
    draft.ca_file_where = table.Where("ca_file");
    upstream.ca_file = ParseFileName(*ca_file, draft.ca_file_where);
    upstream.ca_file_where = draft.ca_file_where;
  }
}

// Every key but `use` is the plugin's own, so unknown keys are not checked here; the plugin
// checks its options when it is configured.
PluginSpec ReadPlugin(const TableReader& table) {
  PluginSpec plugin;
  plugin.use = ParsePluginSpec(table.RequireString("use"), table.Where("use"));
  plugin.origin = table.Origin();
  for (const auto& [key, value] : table.table()) {
    if (key.str() == "use") continue;
    plugin.options.emplace(key.str(), ToOptionValue(value));
    plugin.option_where.emplace(key.str(), table.Where(key.str()));
  }
  return plugin;
}

void ReadTimeouts(const TableReader& table, Timeouts& timeouts) {
  table.OnlyKeys({"upstream", "idle", "drain", "filter_keepalive"});
  if (auto s = table.Integer("upstream", kTimeoutRange)) {
    timeouts.upstream = std::chrono::seconds(*s);
  }
  if (auto s = table.Integer("idle", kTimeoutRange)) timeouts.idle = std::chrono::seconds(*s);
  if (auto s = table.Integer("drain", kTimeoutRange)) timeouts.drain = std::chrono::seconds(*s);
  if (auto s = table.Integer("filter_keepalive", kTimeoutRange)) {
    timeouts.filter_keepalive = std::chrono::seconds(*s);
  }
}

void ReadLimits(const TableReader& table, Limits& limits, Draft& draft) {
  table.OnlyKeys({"max_sessions", "max_upstream_line", "max_auth_line", "filter_memory",
                  "max_filter_size", "spool_dir"});
  if (auto n = table.Integer("max_sessions", kSessionsRange)) limits.max_sessions = *n;
  if (auto n = table.Integer("max_upstream_line", kUpstreamLineRange)) {
    limits.max_upstream_line = *n;
  }
  if (auto n = table.Integer("max_auth_line", kAuthLineRange)) limits.max_auth_line = *n;
  if (auto n = table.Integer("filter_memory", kFilterSizeRange)) {
    limits.filter_memory = *n;
    draft.filter_memory_where = table.Where("filter_memory");
  }
  if (auto n = table.Integer("max_filter_size", kFilterSizeRange)) limits.max_filter_size = *n;
  if (auto dir = table.String("spool_dir")) {
    limits.spool_dir_where = table.Where("spool_dir");
    limits.spool_dir = ParseFileName(*dir, limits.spool_dir_where);
  }
}

void ReadQuarantine(const TableReader& table, Config& config) {
  table.OnlyKeys({"path"});
  config.quarantine_path = ParseFileName(table.RequireString("path"), table.Where("path"));
  config.quarantine_where = table.Where("path");
}

void AddPassThrough(std::string name, std::vector<std::string>& commands) {
  if (std::ranges::find(commands, name) == commands.end()) commands.push_back(std::move(name));
}

toml::table ParseTomlText(std::string_view text, const std::string& file) {
  try {
    return toml::parse(text, std::string_view(file));
  } catch (const toml::parse_error& error) {
    const toml::source_position& at = error.source().begin;
    Fail(Printable(file) + ":" + std::to_string(at.line) + ":" + std::to_string(at.column),
         "syntax error: " + Printable(error.description()));
  }
}

Draft ReadToml(std::string_view text, const std::string& file) {
  const toml::table document = ParseTomlText(text, file);
  const TableReader root(document, "", file);
  root.OnlyKeys({"listen", "upstream", "plugin", "threads", "log_level", "timeouts", "limits",
                 "pass_through_commands", "quarantine", "trusted_networks", "user"});
  Draft draft;
  Config& config = draft.config;
  for (const TableReader& listener : root.Tables("listen")) {
    config.listeners.push_back(ReadListener(listener));
  }
  if (auto upstream = root.Table("upstream")) ReadUpstream(*upstream, draft);
  for (const TableReader& plugin : root.Tables("plugin")) {
    config.plugins.push_back(ReadPlugin(plugin));
  }
  if (auto threads = root.Integer("threads", kThreadsRange)) config.threads = *threads;
  if (auto level = root.String("log_level")) {
    config.log_level = ParseEnum(*level, kLogLevels, root.Where("log_level"));
  }
  if (auto timeouts = root.Table("timeouts")) ReadTimeouts(*timeouts, config.timeouts);
  if (auto limits = root.Table("limits")) ReadLimits(*limits, config.limits, draft);
  for (const auto& [name, where] : root.Strings("pass_through_commands")) {
    AddPassThrough(ParseCommandName(name, where), config.pass_through_commands);
  }
  if (auto quarantine = root.Table("quarantine")) ReadQuarantine(*quarantine, config);
  if (auto user = root.String("user")) {
    config.user_where = root.Where("user");
    config.user = ParseUser(*user, config.user_where);
  }
  if (root.table().contains("trusted_networks")) {
    config.trusted_networks.clear();
    for (const auto& [network, where] : root.Strings("trusted_networks")) {
      config.trusted_networks.push_back(ParseNetwork(network, where));
    }
  }
  return draft;
}

std::string ReadFile(const std::string& path) {
  struct Closer {
    void operator()(std::FILE* file) const { std::fclose(file); }
  };
  const std::unique_ptr<std::FILE, Closer> file(std::fopen(path.c_str(), "rb"));
  if (!file) Fail(Printable(path), "cannot read: " + text::ErrnoText(errno));
  std::string text;
  std::array<char, 8192> buffer;
  std::size_t count = 0;
  while ((count = std::fread(buffer.data(), 1, buffer.size(), file.get())) > 0) {
    text.append(buffer.data(), count);
  }
  // A directory opens fine and fails here, with EISDIR.
  if (std::ferror(file.get())) {
    Fail(Printable(path), "cannot read: " + text::ErrnoText(errno));
  }
  return text;
}

// --------------------------------------------------------------------------- command line

// The command line as given: an empty optional is a flag that was not given. Values stay
// text until applied, so that they are checked by the same code as the file's.
struct Flags {
  std::optional<std::string> config_file;
  std::optional<std::string> listen;
  std::optional<std::string> listen_tls;
  std::optional<std::string> cert;
  std::optional<std::string> key;
  std::optional<std::string> upstream;
  std::optional<std::string> upstream_tls;
  std::optional<std::string> upstream_ca;
  std::optional<std::string> upstream_server_name;
  bool upstream_insecure = false;
  std::optional<std::string> upstream_timeout;
  std::optional<std::string> idle_timeout;
  std::optional<std::string> drain_timeout;
  std::vector<std::string> plugins;
  std::optional<std::string> threads;
  std::optional<std::string> log_level;
  std::optional<std::string> max_sessions;
  std::optional<std::string> max_upstream_line;
  std::optional<std::string> filter_memory;
  std::optional<std::string> max_filter_size;
  std::optional<std::string> spool_dir;
  std::optional<std::string> filter_keepalive;
  std::vector<std::string> pass_through;
  std::vector<std::string> trusted_networks;
  std::optional<std::string> user;
  bool check_only = false;
};

void DeclareFlags(CLI::App& app, Flags& flags) {
  const auto text = [&app](const std::string& name, std::optional<std::string>& target,
                           const std::string& type, const std::string& help) {
    app.add_option_function<std::string>(
           name, [&target](const std::string& value) { target = value; }, help)
        ->type_name(type);
  };
  const auto list = [&app](const std::string& name, std::vector<std::string>& target,
                           const std::string& type, const std::string& help) {
    // One value per occurrence: `--plugin a b` must not swallow b silently.
    app.add_option(name, target, help)->type_name(type)->allow_extra_args(false);
  };
  text("-c,--config", flags.config_file, "FILE", "TOML file with the settings; flags override it");
  text("--listen", flags.listen, "HOST:PORT", "address for clients (default 127.0.0.1:1110)");
  text("--listen-tls", flags.listen_tls, "none|starttls|implicit", "TLS towards clients");
  text("--cert", flags.cert, "FILE", "certificate chain (PEM) for client-side TLS");
  text("--key", flags.key, "FILE", "private key (PEM) for client-side TLS");
  text("--upstream", flags.upstream, "HOST:PORT", "the POP3 server to relay to");
  text("--upstream-tls", flags.upstream_tls, "none|starttls|implicit", "TLS towards the server");
  text("--upstream-ca", flags.upstream_ca, "FILE", "CA file instead of the system trust store");
  text("--upstream-server-name", flags.upstream_server_name, "NAME",
       "name to send (SNI) and verify (default: the upstream host)");
  app.add_flag("--upstream-insecure", flags.upstream_insecure,
               "do not verify the server's certificate");
  text("--upstream-timeout", flags.upstream_timeout, "SECONDS",
       "wait for the server to connect, greet or answer (default 60)");
  text("--idle-timeout", flags.idle_timeout, "SECONDS", "client idle limit (default 600)");
  text("--drain-timeout", flags.drain_timeout, "SECONDS",
       "after SIGTERM, time for sessions to finish (default 30)");
  list("--plugin", flags.plugins, "SPEC",
       "built-in name, so:/path/lib.so, file.py or python:package.module; repeatable, in "
       "order");
  text("--threads", flags.threads, "N", "I/O threads, 0 for one per core (default 0)");
  text("--log-level", flags.log_level, "trace|debug|info|warn|error", "default info");
  text("--max-sessions", flags.max_sessions, "N", "concurrent sessions (default 1000)");
  text("--max-upstream-line", flags.max_upstream_line, "BYTES",
       "longest status line from the server (default 4096)");
  text("--filter-memory", flags.filter_memory, "BYTES",
       "hold a message for the plugins in memory up to this, spool it beyond (default "
       "8388608)");
  text("--max-filter-size", flags.max_filter_size, "BYTES",
       "larger messages pass the plugins unfiltered (default 67108864)");
  text("--spool-dir", flags.spool_dir, "DIR",
       "where messages over --filter-memory are spooled, in unnamed files (default /var/tmp)");
  text("--filter-keepalive", flags.filter_keepalive, "SECONDS",
       "keep a client waiting on a slow plugin alive after this long (default 10)");
  list("--pass-through", flags.pass_through, "CMD", "relay this unknown command; repeatable");
  list("--trusted-network", flags.trusted_networks, "CIDR",
       "may log in without TLS where TLS is offered (default loopback); repeatable");
  text("--user", flags.user, "NAME",
       "after binding and opening files, run as this user and its groups");
  app.add_flag("-t,--check-config", flags.check_only,
               "check the configuration (plugins, certificates, quarantine, user) as start-up "
               "would, without binding or connecting; exit 0 if it is ok, else 2");
  app.set_version_flag("--version", std::string(kVersion));
}

Flags ReadFlags(int argc, const char* const* argv) {
  CLI::App app("popgate: a POP3 proxy that passes every message through a chain of plugins",
               "popgate");
  app.footer("Everything can also be set in the TOML file given by -c.");
  Flags flags;
  DeclareFlags(app, flags);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    throw HelpRequested(app.help());
  } catch (const CLI::CallForAllHelp&) {
    throw HelpRequested(app.help("", CLI::AppFormatMode::All));
  } catch (const CLI::CallForVersion&) {
    throw HelpRequested(std::string(kVersion) + "\n");  // ends in a newline, as help does
  } catch (const CLI::ParseError& error) {
    throw ConfigError(OneLine(error.what()));
  }
  return flags;
}

// --listen replaces the file's listeners with one. Without it, --listen-tls, --cert and --key
// describe the default listener; they cannot pick one of several [[listen]] tables.
void ApplyListenerFlags(const Flags& flags, Config& config) {
  const char* tls_flag = flags.listen_tls ? "--listen-tls"
                         : flags.cert     ? "--cert"
                         : flags.key      ? "--key"
                                          : nullptr;
  if (!flags.listen && !tls_flag) return;
  if (!flags.listen && !config.listeners.empty()) {
    Fail(tls_flag, "needs --listen when the file has [[listen]] tables");
  }
  Listener listener;
  listener.address =
      flags.listen ? ParseEndpoint(*flags.listen, 0, "--listen") : DefaultListener().address;
  if (flags.listen_tls) listener.tls = ParseEnum(*flags.listen_tls, kTlsModes, "--listen-tls");
  if (flags.cert) listener.cert_file = ParseFileName(*flags.cert, "--cert");
  if (flags.key) listener.key_file = ParseFileName(*flags.key, "--key");
  CheckListenerTls(listener, "--listen-tls", "--cert", "--key");
  config.listeners = {std::move(listener)};
}

void ApplyUpstreamFlags(const Flags& flags, Draft& draft) {
  Upstream& upstream = draft.config.upstream;
  if (flags.upstream) {
    upstream.address = ParseEndpoint(*flags.upstream, 1, "--upstream");
    draft.has_upstream = true;
  }
  if (flags.upstream_tls) {
    upstream.tls = ParseEnum(*flags.upstream_tls, kTlsModes, "--upstream-tls");
  }
  if (flags.upstream_ca) {
    upstream.ca_file = ParseFileName(*flags.upstream_ca, "--upstream-ca");
    draft.ca_file_where = "--upstream-ca";
  }
  if (flags.upstream_server_name) {
    upstream.server_name = ParseServerName(*flags.upstream_server_name, "--upstream-server-name");
    draft.server_name_where = "--upstream-server-name";
  }
  if (flags.upstream_insecure) upstream.verify = false;
}

void ApplyTimeoutAndLimitFlags(const Flags& flags, Draft& draft) {
  Config& config = draft.config;
  if (flags.upstream_timeout) {
    config.timeouts.upstream = std::chrono::seconds(
        ParseIntegerFlag(*flags.upstream_timeout, kTimeoutRange, "--upstream-timeout"));
  }
  if (flags.idle_timeout) {
    config.timeouts.idle = std::chrono::seconds(
        ParseIntegerFlag(*flags.idle_timeout, kTimeoutRange, "--idle-timeout"));
  }
  if (flags.drain_timeout) {
    config.timeouts.drain = std::chrono::seconds(
        ParseIntegerFlag(*flags.drain_timeout, kTimeoutRange, "--drain-timeout"));
  }
  if (flags.max_sessions) {
    config.limits.max_sessions =
        ParseIntegerFlag(*flags.max_sessions, kSessionsRange, "--max-sessions");
  }
  if (flags.max_upstream_line) {
    config.limits.max_upstream_line =
        ParseIntegerFlag(*flags.max_upstream_line, kUpstreamLineRange, "--max-upstream-line");
  }
  if (flags.filter_memory) {
    config.limits.filter_memory =
        ParseIntegerFlag(*flags.filter_memory, kFilterSizeRange, "--filter-memory");
    draft.filter_memory_where = "--filter-memory";
  }
  if (flags.spool_dir) {
    config.limits.spool_dir_where = "--spool-dir";
    config.limits.spool_dir = ParseFileName(*flags.spool_dir, "--spool-dir");
  }
  if (flags.max_filter_size) {
    config.limits.max_filter_size =
        ParseIntegerFlag(*flags.max_filter_size, kFilterSizeRange, "--max-filter-size");
  }
  if (flags.filter_keepalive) {
    config.timeouts.filter_keepalive = std::chrono::seconds(
        ParseIntegerFlag(*flags.filter_keepalive, kTimeoutRange, "--filter-keepalive"));
  }
}

// A repeatable flag replaces the file's whole list rather than adding to it, like every other
// flag overrides its setting.
void ApplyFlags(const Flags& flags, Draft& draft) {
  Config& config = draft.config;
  ApplyListenerFlags(flags, config);
  ApplyUpstreamFlags(flags, draft);
  ApplyTimeoutAndLimitFlags(flags, draft);
  if (!flags.plugins.empty()) {
    config.plugins.clear();
    for (const std::string& spec : flags.plugins) {
      config.plugins.push_back(PluginSpec{ParsePluginSpec(spec, "--plugin"), {}, "--plugin", {}});
    }
  }
  if (flags.threads) config.threads = ParseIntegerFlag(*flags.threads, kThreadsRange, "--threads");
  if (flags.log_level) config.log_level = ParseEnum(*flags.log_level, kLogLevels, "--log-level");
  if (flags.user) {
    config.user_where = "--user";
    config.user = ParseUser(*flags.user, config.user_where);
  }
  config.check_only = flags.check_only;
  if (!flags.trusted_networks.empty()) {
    config.trusted_networks.clear();
    for (const std::string& network : flags.trusted_networks) {
      config.trusted_networks.push_back(ParseNetwork(network, "--trusted-network"));
    }
  }
  if (!flags.pass_through.empty()) {
    config.pass_through_commands.clear();
    for (const std::string& name : flags.pass_through) {
      AddPassThrough(ParseCommandName(name, "--pass-through"), config.pass_through_commands);
    }
  }
}

// ------------------------------------------------------------------------------ finishing

bool IsWritableDirectory(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode) &&
         ::access(path.c_str(), W_OK | X_OK) == 0;
}

// A listener binds to an address, so its host must be one (a name would be resolved to
// whichever address came first); two listeners on one address can never both bind.
void CheckListenAddresses(const std::vector<Listener>& listeners) {
  std::vector<std::pair<std::string, std::uint16_t>> seen;
  for (const Listener& listener : listeners) {
    unsigned char bytes[16];
    const std::string& host = listener.address.host;
    bool v4 = ::inet_pton(AF_INET, host.c_str(), bytes) == 1;
    bool v6 = !v4 && ::inet_pton(AF_INET6, host.c_str(), bytes) == 1;
    if (!v4 && !v6) {
      Fail(listener.address_where, Quoted(host) +
                                       " is not an IP address (a listener binds to "
                                       "an address: 127.0.0.1, 0.0.0.0, [::1], [::])");
    }
    if (listener.address.port == 0) continue;  // the kernel picks: never the same
    std::pair<std::string, std::uint16_t> key(
        std::string(reinterpret_cast<char*>(bytes), v4 ? 4 : 16), listener.address.port);
    if (std::ranges::find(seen, key) != seen.end()) {
      Fail(listener.address_where,
           FormatEndpoint(host, listener.address.port) + " is already a listener above");
    }
    seen.push_back(std::move(key));
  }
}

// Checks that span settings which may come from the file or the flags, then fills defaults.
Config Finish(Draft draft) {
  Config& config = draft.config;
  if (!draft.has_upstream) Fail(draft.upstream_table_where, kNoUpstream);
  // As for listeners: a CA or server name for an upstream without TLS means TLS was intended.
  if (config.upstream.tls == TlsMode::kNone) {
    if (!config.upstream.ca_file.empty()) {
      Fail(draft.ca_file_where, "set, but upstream TLS is none");
    }
    if (!config.upstream.server_name.empty()) {
      Fail(draft.server_name_where, "set, but upstream TLS is none");
    }
  }
  // Checked here, not when a large message arrives: a spool that can't work would only
  // show as tempfailed messages much later.
  if (!IsWritableDirectory(config.limits.spool_dir)) {
    Fail(config.limits.spool_dir_where,
         Quoted(config.limits.spool_dir) + " is not a directory popgate can write to");
  }
  if (config.listeners.empty()) config.listeners.push_back(DefaultListener());
  CheckListenAddresses(config.listeners);
  // Above max_filter_size, filter_memory could never be used. The default simply follows a
  // smaller max_filter_size; a value set so is a mistake.
  if (config.limits.filter_memory > config.limits.max_filter_size &&
      draft.filter_memory_where == Draft{}.filter_memory_where) {
    config.limits.filter_memory = config.limits.max_filter_size;
  }
  if (config.limits.filter_memory > config.limits.max_filter_size) {
    Fail(draft.filter_memory_where,
         std::to_string(config.limits.filter_memory) + " is above max_filter_size (" +
             std::to_string(config.limits.max_filter_size) +
             "): no message larger than that is filtered, so that much is never held");
  }
  return std::move(draft.config);
}

}  // namespace

Config Parse(int argc, const char* const* argv) {
  const Flags flags = ReadFlags(argc, argv);
  Draft draft;
  if (flags.config_file) {
    const std::string file = ParseFileName(*flags.config_file, "-c");
    draft = ReadToml(ReadFile(file), file);
    draft.config.config_file = file;
  }
  ApplyFlags(flags, draft);
  return Finish(std::move(draft));
}

Config ParseToml(std::string_view toml_text, const std::string& file_name) {
  return Finish(ReadToml(toml_text, file_name));
}

std::string ToString(TlsMode mode) {
  for (const Named<TlsMode>& named : kTlsModes) {
    if (named.value == mode) return std::string(named.name);
  }
  return "unknown";
}

std::string FormatEndpoint(std::string_view host, std::uint16_t port) {
  // Only an IPv6 address has a ':' (a host name or IPv4 address never does).
  const bool v6 = host.find(':') != std::string_view::npos;
  std::string text;
  if (v6) text += '[';
  text += host;
  if (v6) text += ']';
  return text + ':' + std::to_string(port);
}

}  // namespace popgate::config
