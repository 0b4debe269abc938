// Config from flags and TOML: defaults, every flag and key, overrides, and the exact one-line
// error for each kind of mistake, since that line is all an admin sees when start-up fails.

#include "config/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace popgate::config {
namespace {

using std::chrono::seconds;

constexpr std::string_view kUpstream = "[upstream]\naddress = \"pop.example.com:110\"\n";

Config ParseArgs(std::vector<std::string> args) {
  args.insert(args.begin(), "popgate");
  std::vector<const char*> argv;
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  argv.push_back(nullptr);
  return Parse(static_cast<int>(args.size()), argv.data());
}

// what() of the ConfigError that `run` throws. Every message must be one line.
std::string ErrorOf(const std::function<void()>& run) {
  try {
    run();
  } catch (const ConfigError& error) {
    const std::string text = error.what();
    EXPECT_EQ(text.find('\n'), std::string::npos) << text;
    return text;
  }
  return "(no ConfigError)";
}

std::string ArgsError(const std::vector<std::string>& args) {
  return ErrorOf([&] { ParseArgs(args); });
}

// Errors from a file named p.toml; `text` gets a valid [upstream] appended unless it has one.
std::string TomlError(std::string text) {
  if (text.find("upstream") == std::string::npos) text += kUpstream;
  return ErrorOf([&] { ParseToml(text, "p.toml"); });
}

// A fresh directory for config files, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "config_test.XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string Write(const std::string& name, std::string_view text) const {
    const std::string file = (path_ / name).string();
    std::ofstream(file) << text;
    return file;
  }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

void ExpectDefaultsExceptUpstream(const Config& config) {
  ASSERT_EQ(config.listeners.size(), 1u);
  EXPECT_EQ(config.listeners[0].address.host, "127.0.0.1");
  EXPECT_EQ(config.listeners[0].address.port, 1110);
  EXPECT_EQ(config.listeners[0].tls, TlsMode::kNone);
  EXPECT_EQ(config.listeners[0].cert_file, "");
  EXPECT_EQ(config.listeners[0].key_file, "");
  EXPECT_EQ(config.upstream.tls, TlsMode::kNone);
  EXPECT_TRUE(config.upstream.verify);
  EXPECT_EQ(config.upstream.ca_file, "");
  EXPECT_EQ(config.upstream.server_name, "");
  EXPECT_TRUE(config.plugins.empty());
  EXPECT_EQ(config.threads, 0u);
  EXPECT_EQ(config.log_level, LogLevel::kInfo);
  EXPECT_EQ(config.timeouts.upstream, seconds(60));
  EXPECT_EQ(config.timeouts.idle, seconds(600));
  EXPECT_EQ(config.timeouts.drain, seconds(30));
  EXPECT_EQ(config.timeouts.filter_keepalive, seconds(10));
  EXPECT_EQ(config.limits.max_sessions, 1000u);
  EXPECT_EQ(config.limits.max_command_line, 255u);
  EXPECT_EQ(config.limits.max_auth_line, 16384u);
  EXPECT_EQ(config.limits.max_upstream_line, 4096u);
  EXPECT_EQ(config.limits.filter_memory, 8u * 1024 * 1024);
  EXPECT_EQ(config.limits.max_filter_size, 64u * 1024 * 1024);
  EXPECT_EQ(config.limits.spool_dir, "/var/tmp");
  EXPECT_TRUE(config.pass_through_commands.empty());
  EXPECT_EQ(config.quarantine_path, "");
}

// ------------------------------------------------------------------------------- defaults

TEST(ConfigDefaults, OnlyUpstreamFlag) {
  const Config config = ParseArgs({"--upstream", "pop.example.com:110"});
  EXPECT_EQ(config.upstream.address.host, "pop.example.com");
  EXPECT_EQ(config.upstream.address.port, 110);
  ExpectDefaultsExceptUpstream(config);
}

TEST(ConfigDefaults, OnlyUpstreamTable) {
  const Config config = ParseToml(kUpstream, "p.toml");
  EXPECT_EQ(config.upstream.address.host, "pop.example.com");
  ExpectDefaultsExceptUpstream(config);
}

TEST(ConfigDefaults, NoUpstreamAnywhere) {
  const std::string expected =
      "no upstream configured; use --upstream HOST:PORT or [upstream] address";
  EXPECT_EQ(ArgsError({}), expected);
  EXPECT_EQ(ArgsError({"--listen", "127.0.0.1:2110"}), expected);
  EXPECT_EQ(ErrorOf([] { ParseToml("threads = 2\n", "p.toml"); }), expected);
}

TEST(ConfigDefaults, UpstreamTableWithoutAddressNamesTheTable) {
  EXPECT_EQ(ErrorOf([] { ParseToml("threads = 1\n\n[upstream]\ntls = \"implicit\"\n", "p.toml"); }),
            "p.toml:3: upstream.address: no upstream configured; use --upstream HOST:PORT or "
            "[upstream] address");
  // The flag supplies what the table lacks.
  TempDir dir;
  const std::string file = dir.Write("p.toml", "[upstream]\ntls = \"implicit\"\n");
  const Config config = ParseArgs({"-c", file, "--upstream", "pop.example.com:995"});
  EXPECT_EQ(config.upstream.tls, TlsMode::kImplicit);
  EXPECT_EQ(config.upstream.address.port, 995);
}

TEST(ConfigDefaults, ToStringNamesTlsModes) {
  EXPECT_EQ(ToString(TlsMode::kNone), "none");
  EXPECT_EQ(ToString(TlsMode::kStartTls), "starttls");
  EXPECT_EQ(ToString(TlsMode::kImplicit), "implicit");
}

// ---------------------------------------------------------------------------------- flags

TEST(ConfigFlags, EveryFlag) {
  // Flag and value side by side.
  // clang-format off
  const Config config = ParseArgs({
      "--listen", "0.0.0.0:995",
      "--listen-tls", "implicit",
      "--cert", "/etc/popgate/cert.pem",
      "--key", "/etc/popgate/key.pem",
      "--upstream", "pop.example.com:995",
      "--upstream-tls", "implicit",
      "--upstream-ca", "/etc/ssl/ca.pem",
      "--upstream-server-name", "mail.example.com",
      "--upstream-insecure",
      "--upstream-timeout", "20",
      "--idle-timeout", "900",
      "--drain-timeout", "5",
      "--plugin", "spam_tag",
      "--plugin", "filters/my_filter.py",
      "--threads", "4",
      "--log-level", "debug",
      "--max-sessions", "50",
      "--max-upstream-line", "8192",
      "--max-filter-size", "1048576",
      "--filter-memory", "65536",
      "--spool-dir", "/tmp",
      "--filter-keepalive", "3",
      "--pass-through", "xtnd",
      "--pass-through", "X2",
  });
  // clang-format on
  ASSERT_EQ(config.listeners.size(), 1u);
  EXPECT_EQ(config.listeners[0].address.host, "0.0.0.0");
  EXPECT_EQ(config.listeners[0].address.port, 995);
  EXPECT_EQ(config.listeners[0].tls, TlsMode::kImplicit);
  EXPECT_EQ(config.listeners[0].cert_file, "/etc/popgate/cert.pem");
  EXPECT_EQ(config.listeners[0].key_file, "/etc/popgate/key.pem");
  EXPECT_EQ(config.upstream.address.host, "pop.example.com");
  EXPECT_EQ(config.upstream.address.port, 995);
  EXPECT_EQ(config.upstream.tls, TlsMode::kImplicit);
  EXPECT_EQ(config.upstream.ca_file, "/etc/ssl/ca.pem");
  EXPECT_EQ(config.upstream.server_name, "mail.example.com");
  EXPECT_FALSE(config.upstream.verify);
  EXPECT_EQ(config.timeouts.upstream, seconds(20));
  EXPECT_EQ(config.timeouts.idle, seconds(900));
  EXPECT_EQ(config.timeouts.drain, seconds(5));
  ASSERT_EQ(config.plugins.size(), 2u);
  EXPECT_EQ(config.plugins[0].use, "spam_tag");
  EXPECT_EQ(config.plugins[0].origin, "--plugin");
  EXPECT_TRUE(config.plugins[0].options.empty());
  EXPECT_EQ(config.plugins[1].use, "filters/my_filter.py");
  EXPECT_EQ(config.threads, 4u);
  EXPECT_EQ(config.log_level, LogLevel::kDebug);
  EXPECT_EQ(config.limits.max_sessions, 50u);
  EXPECT_EQ(config.limits.max_upstream_line, 8192u);
  EXPECT_EQ(config.limits.max_filter_size, 1048576u);
  EXPECT_EQ(config.limits.filter_memory, 65536u);
  EXPECT_EQ(config.limits.spool_dir, "/tmp");
  EXPECT_EQ(config.timeouts.filter_keepalive, seconds(3));
  EXPECT_EQ(config.pass_through_commands, (std::vector<std::string>{"XTND", "X2"}));
}

TEST(ConfigFlags, EqualsSignForm) {
  const Config config = ParseArgs({"--upstream=pop.example.com:110", "--log-level=trace"});
  EXPECT_EQ(config.upstream.address.port, 110);
  EXPECT_EQ(config.log_level, LogLevel::kTrace);
}

TEST(ConfigFlags, EveryLogLevelAndTlsMode) {
  const std::vector<std::pair<std::string, LogLevel>> levels = {{"trace", LogLevel::kTrace},
                                                                {"debug", LogLevel::kDebug},
                                                                {"info", LogLevel::kInfo},
                                                                {"warn", LogLevel::kWarn},
                                                                {"error", LogLevel::kError}};
  for (const auto& [name, level] : levels) {
    EXPECT_EQ(ParseArgs({"--upstream", "h:1", "--log-level", name}).log_level, level) << name;
  }
  EXPECT_EQ(ParseArgs({"--upstream", "h:1", "--upstream-tls", "starttls"}).upstream.tls,
            TlsMode::kStartTls);
  EXPECT_EQ(ParseArgs({"--upstream", "h:1", "--upstream-tls", "none"}).upstream.tls,
            TlsMode::kNone);
}

TEST(ConfigFlags, ListenerTlsFlagsWithoutListenDescribeTheDefaultListener) {
  const Config config = ParseArgs(
      {"--upstream", "h:110", "--listen-tls", "starttls", "--cert", "c.pem", "--key", "k.pem"});
  ASSERT_EQ(config.listeners.size(), 1u);
  EXPECT_EQ(config.listeners[0].address.host, "127.0.0.1");
  EXPECT_EQ(config.listeners[0].address.port, 1110);
  EXPECT_EQ(config.listeners[0].tls, TlsMode::kStartTls);
}

TEST(ConfigFlags, ListenPortZeroLetsTheKernelPick) {
  const Config config = ParseArgs({"--upstream", "h:110", "--listen", "127.0.0.1:0"});
  EXPECT_EQ(config.listeners[0].address.port, 0);
}

TEST(ConfigFlags, HelpAndVersion) {
  try {
    ParseArgs({"--help"});
    FAIL() << "no HelpRequested";
  } catch (const HelpRequested& help) {
    const std::string text = help.what();
    EXPECT_NE(text.find("--upstream-server-name"), std::string::npos) << text;
    EXPECT_NE(text.find("--pass-through"), std::string::npos) << text;
  }
  try {
    ParseArgs({"--version"});
    FAIL() << "no HelpRequested";
  } catch (const HelpRequested& version) {
    EXPECT_EQ(std::string(version.what()).rfind("popgate ", 0), 0u) << version.what();
  }
  // Help wins over other mistakes: the user is asking how to fix them.
  EXPECT_THROW(ParseArgs({"--threads", "x", "-h"}), HelpRequested);
}

TEST(ConfigFlags, Errors) {
  EXPECT_EQ(ArgsError({"--upstream", "x"}), "--upstream: expected HOST:PORT, got \"x\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:0"}), "--upstream: port must be 1..65535, got \"h:0\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:65536"}),
            "--upstream: port must be 1..65535, got \"h:65536\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--listen", "h:"}),
            "--listen: expected HOST:PORT, got \"h:\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--listen-tls", "ssl"}),
            "--listen-tls: expected none|starttls|implicit, got \"ssl\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--upstream-tls", "TLS"}),
            "--upstream-tls: expected none|starttls|implicit, got \"TLS\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--threads", "four"}),
            "--threads: expected an integer, got \"four\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--threads", "257"}),
            "--threads: must be 0..256, got 257");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--idle-timeout", "0"}),
            "--idle-timeout: must be 1..86400 seconds, got 0");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--upstream-timeout", "86401"}),
            "--upstream-timeout: must be 1..86400 seconds, got 86401");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--drain-timeout", "1.5"}),
            "--drain-timeout: expected an integer, got \"1.5\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--max-sessions", "0"}),
            "--max-sessions: must be 1..1000000, got 0");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--max-upstream-line", "511"}),
            "--max-upstream-line: must be 512..1048576 bytes, got 511");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--max-filter-size", "1000"}),
            "--max-filter-size: must be 1024..1073741824 bytes, got 1000");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--filter-keepalive", "0"}),
            "--filter-keepalive: must be 1..86400 seconds, got 0");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--log-level", "verbose"}),
            "--log-level: expected trace|debug|info|warn|error, got \"verbose\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--plugin", ""}),
            "--plugin: expected a plugin name, file.py or python:module, got \"\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--pass-through", "X-TND"}),
            "--pass-through: expected a command name of 1-16 letters and digits, got \"X-TND\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--pass-through", "stls"}),
            "--pass-through: STLS is handled by popgate itself and cannot be passed through");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--upstream-server-name", "bad name"}),
            "--upstream-server-name: expected a host name, got \"bad name\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--upstream-ca", ""}),
            "--upstream-ca: expected a file name, got \"\"");
  EXPECT_EQ(ArgsError({"-c", ""}), "-c: expected a file name, got \"\"");
}

TEST(ConfigFlags, ListenerTlsNeedsCertAndKey) {
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--listen", ":995", "--listen-tls", "implicit"}),
            "--listen: expected HOST:PORT, got \":995\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--listen", "0.0.0.0:995", "--listen-tls", "implicit"}),
            "--cert: required when --listen-tls is implicit");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--listen-tls", "starttls", "--cert", "c.pem"}),
            "--key: required when --listen-tls is starttls");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--cert", "c.pem", "--key", "k.pem"}),
            "--cert: set, but --listen-tls is none");
}

TEST(ConfigFlags, UpstreamTlsSettingsWithoutTlsAreErrors) {
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--upstream-ca", "ca.pem"}),
            "--upstream-ca: set, but upstream TLS is none");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--upstream-server-name", "h"}),
            "--upstream-server-name: set, but upstream TLS is none");
}

TEST(ConfigFlags, Cli11ErrorsBecomeOneLineConfigErrors) {
  const std::string unknown = ArgsError({"--upstream", "h:1", "--bogus"});
  EXPECT_NE(unknown.find("--bogus"), std::string::npos) << unknown;
  const std::string positional = ArgsError({"--upstream", "h:1", "stray"});
  EXPECT_NE(positional.find("stray"), std::string::npos) << positional;
  const std::string no_value = ArgsError({"--upstream"});
  EXPECT_NE(no_value.find("--upstream"), std::string::npos) << no_value;
  // A single-valued flag given twice is a mistake, not a silent choice of one.
  const std::string twice = ArgsError({"--upstream", "a:1", "--upstream", "b:2"});
  EXPECT_NE(twice.find("--upstream"), std::string::npos) << twice;
  // --plugin takes one value per occurrence; a second word is not swallowed.
  const std::string extra = ArgsError({"--upstream", "h:1", "--plugin", "a", "b"});
  EXPECT_NE(extra.find("b"), std::string::npos) << extra;
}

// ------------------------------------------------------------------------------ addresses

TEST(ConfigAddress, Ipv6InBrackets) {
  const Config config = ParseArgs({"--upstream", "[::1]:110", "--listen", "[::]:0"});
  EXPECT_EQ(config.upstream.address.host, "::1");
  EXPECT_EQ(config.upstream.address.port, 110);
  EXPECT_EQ(config.listeners[0].address.host, "::");
  EXPECT_EQ(config.listeners[0].address.port, 0);

  const Config zoned = ParseArgs({"--upstream", "[fe80::1%eth0]:995"});
  EXPECT_EQ(zoned.upstream.address.host, "fe80::1%eth0");

  const Config file = ParseToml("[upstream]\naddress = \"[2001:db8::10]:995\"\n", "p.toml");
  EXPECT_EQ(file.upstream.address.host, "2001:db8::10");
  EXPECT_EQ(file.upstream.address.port, 995);
}

TEST(ConfigAddress, Ipv4AndNames) {
  EXPECT_EQ(ParseArgs({"--upstream", "192.0.2.7:65535"}).upstream.address.port, 65535);
  EXPECT_EQ(ParseArgs({"--upstream", "mail-1.example_x.org:1"}).upstream.address.host,
            "mail-1.example_x.org");
}

TEST(ConfigAddress, FormatEndpointBracketsIpv6Only) {
  EXPECT_EQ(FormatEndpoint("192.0.2.7", 110), "192.0.2.7:110");
  EXPECT_EQ(FormatEndpoint("pop.example.com", 995), "pop.example.com:995");
  EXPECT_EQ(FormatEndpoint("::1", 49388), "[::1]:49388");
  EXPECT_EQ(FormatEndpoint("2001:db8::1", 51234), "[2001:db8::1]:51234");
  EXPECT_EQ(FormatEndpoint("::ffff:192.0.2.7", 110), "[::ffff:192.0.2.7]:110");
  EXPECT_EQ(FormatEndpoint("fe80::1%eth0", 0), "[fe80::1%eth0]:0");
}

TEST(ConfigAddress, FormatEndpointReadsBackAsTheSameAddress) {
  // What popgate writes is what its config reads: an admin can paste a logged address.
  for (const char* text : {"[::1]:110", "[fe80::1%eth0]:995", "192.0.2.7:65535", "h.example:1"}) {
    const Config config = ParseArgs({"--upstream", text});
    EXPECT_EQ(FormatEndpoint(config.upstream.address.host, config.upstream.address.port), text);
  }
}

TEST(ConfigAddress, Malformed) {
  EXPECT_EQ(ArgsError({"--upstream", "::1:110"}),
            "--upstream: expected HOST:PORT, got \"::1:110\" (put an IPv6 address in brackets: "
            "[::1]:110)");
  EXPECT_EQ(ArgsError({"--upstream", "[::1]110"}),
            "--upstream: expected HOST:PORT, got \"[::1]110\"");
  EXPECT_EQ(ArgsError({"--upstream", "[::1:110"}),
            "--upstream: expected HOST:PORT, got \"[::1:110\"");
  EXPECT_EQ(ArgsError({"--upstream", "[example.com]:110"}),
            "--upstream: expected an IPv6 address in [], got \"[example.com]:110\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:+110"}), "--upstream: expected HOST:PORT, got \"h:+110\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:110 "}), "--upstream: expected HOST:PORT, got \"h:110 \"");
  EXPECT_EQ(ArgsError({"--upstream", "a b:110"}),
            "--upstream: expected HOST:PORT, got \"a b:110\"");
  EXPECT_EQ(ArgsError({"--upstream", "h:123456"}),
            "--upstream: expected HOST:PORT, got \"h:123456\"");
}

// ------------------------------------------------------------------------------ TOML file

TEST(ConfigFile, EveryKey) {
  const Config config = ParseToml(R"(threads = 8
log_level = "warn"
pass_through_commands = ["xtnd", "Xsender", "XTND"]

[[listen]]
address = "0.0.0.0:995"
tls = "implicit"
cert = "/etc/popgate/cert.pem"
key = "/etc/popgate/key.pem"

[[listen]]
address = "[::1]:1110"

[upstream]
address = "pop.example.com:995"
tls = "starttls"
verify = false
server_name = "pop.example.com"
ca_file = "/etc/ssl/ca.pem"

[timeouts]
upstream = 30
idle = 1200
drain = 10

[limits]
max_sessions = 20
max_upstream_line = 1024
max_auth_line = 32768

[quarantine]
path = "/var/lib/popgate/quarantine"
)",
                                  "p.toml");
  EXPECT_EQ(config.threads, 8u);
  EXPECT_EQ(config.log_level, LogLevel::kWarn);
  EXPECT_EQ(config.pass_through_commands, (std::vector<std::string>{"XTND", "XSENDER"}));
  ASSERT_EQ(config.listeners.size(), 2u);
  EXPECT_EQ(config.listeners[0].address.host, "0.0.0.0");
  EXPECT_EQ(config.listeners[0].address.port, 995);
  EXPECT_EQ(config.listeners[0].tls, TlsMode::kImplicit);
  EXPECT_EQ(config.listeners[0].cert_file, "/etc/popgate/cert.pem");
  EXPECT_EQ(config.listeners[0].key_file, "/etc/popgate/key.pem");
  EXPECT_EQ(config.listeners[1].address.host, "::1");
  EXPECT_EQ(config.listeners[1].tls, TlsMode::kNone);
  EXPECT_EQ(config.upstream.address.host, "pop.example.com");
  EXPECT_EQ(config.upstream.tls, TlsMode::kStartTls);
  EXPECT_FALSE(config.upstream.verify);
  EXPECT_EQ(config.upstream.server_name, "pop.example.com");
  EXPECT_EQ(config.upstream.ca_file, "/etc/ssl/ca.pem");
  EXPECT_EQ(config.timeouts.upstream, seconds(30));
  EXPECT_EQ(config.timeouts.idle, seconds(1200));
  EXPECT_EQ(config.timeouts.drain, seconds(10));
  EXPECT_EQ(config.limits.max_sessions, 20u);
  EXPECT_EQ(config.limits.max_upstream_line, 1024u);
  EXPECT_EQ(config.limits.max_auth_line, 32768u);
  EXPECT_EQ(config.quarantine_path, "/var/lib/popgate/quarantine");
}

// The example in DESIGN.md ("Contracts users script against") must stay valid.
TEST(ConfigFile, DesignExample) {
  const Config config = ParseToml(R"([[listen]]
address = "0.0.0.0:995"
tls = "implicit"            # none | starttls | implicit
cert = "/etc/popgate/cert.pem"
key = "/etc/popgate/key.pem"

[upstream]
address = "pop.example.com:995"
tls = "implicit"            # none | starttls | implicit
verify = true               # system trust store unless ca_file is set
server_name = "pop.example.com"

[[plugin]]
use = "spam_tag"
spamd = "127.0.0.1:783"
on_error = "pass"           # pass | tempfail

[[plugin]]
use = "audit_log"
path = "/var/log/popgate/audit.jsonl"

[[plugin]]
use = "python"
path = "filters/bayes.py"
options = { db = "/var/lib/popgate/bayes.sqlite" }

[quarantine]
path = "/var/lib/popgate/quarantine"   # a Maildir; withheld originals go here
)",
                                  "popgate.toml");
  ASSERT_EQ(config.plugins.size(), 3u);
  EXPECT_EQ(config.plugins[0].use, "spam_tag");
  EXPECT_EQ(config.plugins[1].use, "audit_log");
  EXPECT_EQ(config.plugins[2].use, "python");
  EXPECT_EQ(config.upstream.tls, TlsMode::kImplicit);
}

TEST(ConfigFile, PluginOptionsAndOrigin) {
  const Config config = ParseToml(R"([upstream]
address = "h:110"

[[plugin]]
use = "spam_tag"
spamd = "127.0.0.1:783"
threshold = 5
ratio = 0.5
strict = true
tags = ["a", 'b', 3]
options = { db = "/var/lib/popgate/bayes.sqlite", "odd key" = "x\ny" }
nested.depth = 1

[[plugin]]
use = "python:filters.bayes"
)",
                                  "p.toml");
  ASSERT_EQ(config.plugins.size(), 2u);
  const PluginSpec& spam = config.plugins[0];
  EXPECT_EQ(spam.use, "spam_tag");
  EXPECT_EQ(spam.origin, "p.toml:4");
  using filter::OptionValue;
  const filter::Options expected = {
      {"spamd", "127.0.0.1:783"},
      {"threshold", 5},
      {"ratio", 0.5},
      {"strict", true},
      {"tags", OptionValue::Array{"a", "b", 3}},
      {"options", OptionValue::Table{{"db", "/var/lib/popgate/bayes.sqlite"}, {"odd key", "x\ny"}}},
      {"nested", OptionValue::Table{{"depth", 1}}},
  };
  EXPECT_EQ(spam.options, expected);
  // What error messages quote: the value as TOML writes it.
  EXPECT_EQ(spam.options.at("tags").ToToml(), "[\"a\", \"b\", 3]");
  EXPECT_EQ(spam.options.at("options").ToToml(),
            "{ db = \"/var/lib/popgate/bayes.sqlite\", \"odd key\" = \"x\\ny\" }");
  EXPECT_EQ(spam.options.at("nested").ToToml(), "{ depth = 1 }");
  EXPECT_EQ(spam.options.at("ratio").ToToml(), "0.5");
  EXPECT_EQ(config.plugins[1].use, "python:filters.bayes");
  EXPECT_EQ(config.plugins[1].origin, "p.toml:14");
  EXPECT_TRUE(config.plugins[1].options.empty());
}

TEST(ConfigFile, ListenerPortZeroAllowed) {
  const Config config =
      ParseToml("[[listen]]\naddress = \"127.0.0.1:0\"\n" + std::string(kUpstream), "p.toml");
  EXPECT_EQ(config.listeners[0].address.port, 0);
}

TEST(ConfigFile, FlagsOverrideTheFile) {
  TempDir dir;
  const std::string file = dir.Write("popgate.toml", R"(threads = 2
log_level = "error"
pass_through_commands = ["XTND"]

[[listen]]
address = "0.0.0.0:110"

[[listen]]
address = "0.0.0.0:111"

[upstream]
address = "pop.example.com:995"
tls = "implicit"
server_name = "pop.example.com"

[[plugin]]
use = "spam_tag"

[timeouts]
upstream = 30
idle = 700

[limits]
max_sessions = 10
)");
  // The file alone.
  const Config base = ParseArgs({"-c", file});
  EXPECT_EQ(base.listeners.size(), 2u);
  EXPECT_EQ(base.threads, 2u);
  EXPECT_EQ(base.upstream.tls, TlsMode::kImplicit);

  const Config config =
      ParseArgs({"-c", file, "--listen", "127.0.0.1:2110", "--upstream", "other.example:110",
                 "--upstream-tls", "starttls", "--threads", "3", "--idle-timeout", "800",
                 "--plugin", "audit_log", "--pass-through", "XSENDER", "--max-sessions", "11"});
  ASSERT_EQ(config.listeners.size(), 1u);  // --listen replaces the file's listeners
  EXPECT_EQ(config.listeners[0].address.host, "127.0.0.1");
  EXPECT_EQ(config.listeners[0].address.port, 2110);
  EXPECT_EQ(config.upstream.address.host, "other.example");
  EXPECT_EQ(config.upstream.tls, TlsMode::kStartTls);
  EXPECT_EQ(config.upstream.server_name, "pop.example.com");  // kept from the file
  EXPECT_EQ(config.threads, 3u);
  EXPECT_EQ(config.log_level, LogLevel::kError);     // kept
  EXPECT_EQ(config.timeouts.upstream, seconds(30));  // kept
  EXPECT_EQ(config.timeouts.idle, seconds(800));
  ASSERT_EQ(config.plugins.size(), 1u);
  EXPECT_EQ(config.plugins[0].use, "audit_log");
  EXPECT_EQ(config.pass_through_commands, std::vector<std::string>{"XSENDER"});
  EXPECT_EQ(config.limits.max_sessions, 11u);
}

TEST(ConfigFile, ListenerTlsFlagsCannotPickAFileListener) {
  TempDir dir;
  const std::string file =
      dir.Write("p.toml", "[[listen]]\naddress = \"0.0.0.0:110\"\n" + std::string(kUpstream));
  EXPECT_EQ(ArgsError({"-c", file, "--cert", "c.pem"}),
            "--cert: needs --listen when the file has [[listen]] tables");
}

TEST(ConfigFile, UpstreamTlsFromFlagMeetsCaFromFile) {
  TempDir dir;
  const std::string file = dir.Write(
      "p.toml", "[upstream]\naddress = \"h:995\"\ntls = \"implicit\"\nca_file = \"ca.pem\"\n");
  EXPECT_EQ(ParseArgs({"-c", file}).upstream.ca_file, "ca.pem");
  EXPECT_EQ(ArgsError({"-c", file, "--upstream-tls", "none"}),
            file + ":4: upstream.ca_file: set, but upstream TLS is none");
}

// -------------------------------------------------------------------------- file errors

TEST(ConfigFileErrors, CannotRead) {
  TempDir dir;
  const std::string missing = dir.path() + "/missing.toml";
  EXPECT_EQ(ArgsError({"-c", missing}), missing + ": cannot read: No such file or directory");
  EXPECT_EQ(ArgsError({"-c", dir.path()}), dir.path() + ": cannot read: Is a directory");
}

TEST(ConfigFileErrors, SyntaxErrorHasLineAndColumn) {
  TempDir dir;
  const std::string file = dir.Write("bad.toml", "threads = 2\nlog_level = \n");
  const std::string error = ArgsError({"-c", file});
  EXPECT_EQ(error.rfind(file + ":2:13: syntax error: ", 0), 0u) << error;

  const std::string duplicate = TomlError("threads = 1\nthreads = 2\n");
  EXPECT_EQ(duplicate.rfind("p.toml:2:", 0), 0u) << duplicate;
  EXPECT_NE(duplicate.find("syntax error: "), std::string::npos) << duplicate;
}

TEST(ConfigFileErrors, UnknownKeysNameTheirLine) {
  EXPECT_EQ(TomlError("threads = 1\nthread = 2\n"),
            "p.toml:2: thread: unknown key (expected one of: listen, upstream, plugin, threads, "
            "log_level, timeouts, limits, pass_through_commands, quarantine, trusted_networks, "
            "user)");
  EXPECT_EQ(TomlError("[upstream]\naddress = \"h:1\"\n\nadress = \"h:2\"\n"),
            "p.toml:4: upstream.adress: unknown key (expected one of: address, tls, verify, "
            "server_name, ca_file)");
  EXPECT_EQ(
      TomlError("[[listen]]\naddress = \"h:1\"\n[[listen]]\naddress = \"h:2\"\ncrt = \"c\"\n"),
      "p.toml:5: listen[1].crt: unknown key (expected one of: address, tls, cert, key)");
  EXPECT_EQ(TomlError("[timeouts]\nidle = 700\nconnect = 5\n"),
            "p.toml:3: timeouts.connect: unknown key (expected one of: upstream, idle, drain, "
            "filter_keepalive)");
  EXPECT_EQ(TomlError("[limits]\nmax_session = 5\n"),
            "p.toml:2: limits.max_session: unknown key (expected one of: max_sessions, "
            "max_upstream_line, max_auth_line, filter_memory, max_filter_size, spool_dir)");
  // The spool directory is checked at start-up, not when the first large message comes.
  EXPECT_EQ(TomlError("[limits]\nspool_dir = \"/nonexistent/spool\"\n"),
            "p.toml:2: limits.spool_dir: \"/nonexistent/spool\" is not a directory popgate can "
            "write to");
  EXPECT_EQ(TomlError("[limits]\nspool_dir = \"/etc/hostname\"\n"),
            "p.toml:2: limits.spool_dir: \"/etc/hostname\" is not a directory popgate can "
            "write to");
  // A misspelt table is reported at its header.
  EXPECT_EQ(TomlError("threads = 1\n\n[timeout]\nidle = 5\n").substr(0, 26),
            "p.toml:3: timeout: unknown");
  // The first typo in the file is the one named, not the first in key order.
  EXPECT_EQ(TomlError("zzz = 1\naaa = 2\n").substr(0, 25), "p.toml:1: zzz: unknown ke");
  // Even when a required key is missing too: the typo is usually why.
  EXPECT_EQ(TomlError("[[listen]]\nadress = \"h:1\"\n").substr(0, 35),
            "p.toml:2: listen[0].adress: unknown");
}

TEST(ConfigFileErrors, WrongTypes) {
  EXPECT_EQ(TomlError("threads = \"4\"\n"), "p.toml:1: threads: expected an integer, got a string");
  EXPECT_EQ(TomlError("[timeouts]\nidle = 1.5\n"),
            "p.toml:2: timeouts.idle: expected an integer, got a float");
  EXPECT_EQ(TomlError("[upstream]\naddress = \"h:1\"\nverify = \"yes\"\n"),
            "p.toml:3: upstream.verify: expected a boolean, got a string");
  EXPECT_EQ(TomlError("[upstream]\naddress = 110\n"),
            "p.toml:2: upstream.address: expected a string, got an integer");
  EXPECT_EQ(TomlError("upstream = \"h:110\"\n"),
            "p.toml:1: upstream: expected a table, got a string");
  EXPECT_EQ(TomlError("[listen]\naddress = \"h:1\"\n"),
            "p.toml:1: listen: expected an array of tables ([[listen]]), got a table");
  EXPECT_EQ(TomlError("listen = [\"h:1\"]\n"),
            "p.toml:1: listen[0]: expected a table, got a string");
  EXPECT_EQ(TomlError("pass_through_commands = \"XTND\"\n"),
            "p.toml:1: pass_through_commands: expected an array of strings, got a string");
  EXPECT_EQ(TomlError("pass_through_commands = [\n  \"XTND\",\n  7,\n]\n"),
            "p.toml:3: pass_through_commands[1]: expected a string, got an integer");
  EXPECT_EQ(TomlError("log_level = 1979-05-27\n"),
            "p.toml:1: log_level: expected a string, got a date");
  EXPECT_EQ(TomlError("[[plugin]]\nuse = [\"a\"]\n"),
            "p.toml:2: plugin[0].use: expected a string, got an array");
}

TEST(ConfigFileErrors, MissingRequiredKeyNamesTheTable) {
  EXPECT_EQ(TomlError("threads = 1\n\n[[listen]]\ntls = \"none\"\n"),
            "p.toml:3: listen[0].address: missing");
  EXPECT_EQ(TomlError("[[plugin]]\nuse = \"a\"\n\n[[plugin]]\npath = \"x.py\"\n"),
            "p.toml:4: plugin[1].use: missing");
  EXPECT_EQ(TomlError("[quarantine]\n"), "p.toml:1: quarantine.path: missing");
}

TEST(ConfigFileErrors, ListenerTlsNeedsCertAndKey) {
  EXPECT_EQ(TomlError(R"([[listen]]
address = "127.0.0.1:110"

[[listen]]
address = "0.0.0.0:995"
tls = "implicit"
key = "/etc/popgate/key.pem"
)"),
            "p.toml:4: listen[1].cert: required when tls is implicit");
  EXPECT_EQ(TomlError("[[listen]]\naddress = \"h:1\"\ntls = \"starttls\"\ncert = \"c.pem\"\n"),
            "p.toml:1: listen[0].key: required when tls is starttls");
  EXPECT_EQ(TomlError("[[listen]]\naddress = \"h:1\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n"),
            "p.toml:3: listen[0].cert: set, but tls is none");
  EXPECT_EQ(TomlError("[[listen]]\naddress = \"h:1\"\ntls = \"implicit\"\ncert = \"\"\n"),
            "p.toml:4: listen[0].cert: expected a file name, got \"\"");
}

TEST(ConfigFileErrors, BadValues) {
  // The example in config.h.
  EXPECT_EQ(TomlError("threads = 1\n[upstream]\naddress = \"pop.example\"\n"),
            "p.toml:3: upstream.address: expected HOST:PORT, got \"pop.example\"");
  EXPECT_EQ(TomlError("[upstream]\naddress = \"h:0\"\n"),
            "p.toml:2: upstream.address: port must be 1..65535, got \"h:0\"");
  EXPECT_EQ(TomlError("[[listen]]\naddress = \"h:70000\"\n"),
            "p.toml:2: listen[0].address: port must be 0..65535, got \"h:70000\"");
  EXPECT_EQ(TomlError("[upstream]\naddress = \"h:1\"\ntls = \"ssl\"\n"),
            "p.toml:3: upstream.tls: expected none|starttls|implicit, got \"ssl\"");
  EXPECT_EQ(TomlError("[upstream]\naddress = \"h:1\"\nserver_name = \"\"\n"),
            "p.toml:3: upstream.server_name: expected a host name, got \"\"");
  EXPECT_EQ(TomlError("[upstream]\naddress = \"h:1\"\nca_file = \"ca.pem\"\n"),
            "p.toml:3: upstream.ca_file: set, but upstream TLS is none");
  EXPECT_EQ(TomlError("threads = 300\n"), "p.toml:1: threads: must be 0..256, got 300");
  EXPECT_EQ(TomlError("threads = -1\n"), "p.toml:1: threads: must be 0..256, got -1");
  EXPECT_EQ(TomlError("log_level = \"INFO\"\n"),
            "p.toml:1: log_level: expected trace|debug|info|warn|error, got \"INFO\"");
  EXPECT_EQ(TomlError("[timeouts]\nupstream = 0\n"),
            "p.toml:2: timeouts.upstream: must be 1..86400 seconds, got 0");
  EXPECT_EQ(TomlError("[timeouts]\ndrain = 86401\n"),
            "p.toml:2: timeouts.drain: must be 1..86400 seconds, got 86401");
  EXPECT_EQ(TomlError("[limits]\nmax_sessions = 0\n"),
            "p.toml:2: limits.max_sessions: must be 1..1000000, got 0");
  EXPECT_EQ(TomlError("[limits]\nmax_upstream_line = 1048577\n"),
            "p.toml:2: limits.max_upstream_line: must be 512..1048576 bytes, got 1048577");
  EXPECT_EQ(TomlError("[limits]\nmax_auth_line = 100\n"),
            "p.toml:2: limits.max_auth_line: must be 255..1048576 bytes, got 100");
  EXPECT_EQ(TomlError("pass_through_commands = [\"XTND\", \"\"]\n"),
            "p.toml:1: pass_through_commands[1]: expected a command name of 1-16 letters and "
            "digits, got \"\"");
  EXPECT_EQ(TomlError("pass_through_commands = [\"ABCDEFGHIJKLMNOPQ\"]\n"),
            "p.toml:1: pass_through_commands[0]: expected a command name of 1-16 letters and "
            "digits, got \"ABCDEFGHIJKLMNOPQ\"");
  EXPECT_EQ(TomlError("pass_through_commands = [\"retr\"]\n"),
            "p.toml:1: pass_through_commands[0]: RETR is handled by popgate itself and cannot be "
            "passed through");
  EXPECT_EQ(TomlError("[[plugin]]\nuse = \"\"\n"),
            "p.toml:2: plugin[0].use: expected a plugin name, file.py or python:module, got \"\"");
}

TEST(ConfigFileErrors, ControlCharactersStayOnOneLine) {
  EXPECT_EQ(TomlError("[upstream]\naddress = \"pop\\nexample\\u0001:1\"\n"),
            "p.toml:2: upstream.address: expected HOST:PORT, got \"pop\\nexample\\x01:1\"");
  EXPECT_EQ(TomlError("\"a\\nb\" = 1\n").substr(0, 23), "p.toml:1: a\\nb: unknown");
}

}  // namespace
}  // namespace popgate::config

namespace popgate::config {
namespace {

TEST(TrustedNetworks, DefaultIsLoopback) {
  const char* argv[] = {"popgate", "--upstream", "127.0.0.1:110"};
  Config config = Parse(3, argv);
  EXPECT_EQ(config.trusted_networks, (std::vector<std::string>{"127.0.0.0/8", "::1/128"}));
}

TEST(TrustedNetworks, FlagsAndFile) {
  const char* argv[] = {"popgate",    "--upstream",        "127.0.0.1:110", "--trusted-network",
                        "10.0.0.0/8", "--trusted-network", "192.0.2.7"};
  EXPECT_EQ(Parse(7, argv).trusted_networks,
            (std::vector<std::string>{"10.0.0.0/8", "192.0.2.7/32"}));
  Config config = ParseToml(
      "trusted_networks = [\"127.0.0.1/32\", \"fd00::/8\"]\n[upstream]\naddress = \"h:110\"\n",
      "p.toml");
  EXPECT_EQ(config.trusted_networks, (std::vector<std::string>{"127.0.0.1/32", "fd00::/8"}));
}

TEST(TrustedNetworks, BadNetworksNameTheirPlace) {
  try {
    ParseToml("trusted_networks = [\"10.0.0.0/33\"]\n[upstream]\naddress = \"h:110\"\n", "p.toml");
    FAIL() << "accepted a /33";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("p.toml:1: trusted_networks"), std::string::npos)
        << e.what();
  }
  const char* argv[] = {"popgate", "--upstream", "127.0.0.1:110", "--trusted-network", "nope"};
  try {
    Parse(5, argv);
    FAIL() << "accepted nope";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--trusted-network"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace popgate::config

namespace popgate::config {
namespace {

TEST(ConfigLimits, FilterMemoryFollowsASmallerMaxFilterSizeUnlessSetAboveIt) {
  const Config config =
      ParseToml("[limits]\nmax_filter_size = 1000000\n" + std::string(kUpstream), "p.toml");
  EXPECT_EQ(config.limits.filter_memory, 1000000u);
  EXPECT_EQ(TomlError("[limits]\nfilter_memory = 2000000\nmax_filter_size = 1000000\n"),
            "p.toml:2: limits.filter_memory: 2000000 is above max_filter_size (1000000): no "
            "message larger than that is filtered, so that much is never held");
}

TEST(ConfigListeners, AHostThatIsNotAnAddressAndTheSameAddressTwiceAreRefused) {
  EXPECT_EQ(TomlError("[[listen]]\naddress = \"1270.0.1:110\"\n"),
            "p.toml:2: listen[0].address: \"1270.0.1\" is not an IP address (a listener binds "
            "to an address: 127.0.0.1, 0.0.0.0, [::1], [::])");
  EXPECT_EQ(TomlError("[[listen]]\naddress = \"127.0.0.1:110\"\n[[listen]]\naddress = "
                      "\"127.0.0.1:110\"\n"),
            "p.toml:4: listen[1].address: 127.0.0.1:110 is already a listener above");
  // Port 0 is the kernel's choice: never the same twice.
  EXPECT_EQ(TomlError("[[listen]]\naddress = \"127.0.0.1:0\"\n[[listen]]\naddress = "
                      "\"127.0.0.1:0\"\n"),
            "(no ConfigError)");
}

// ------------------------------------------------------------------- user and -t

// `user` names an account that exists now (nobody and daemon are in every Debian system);
// the switch itself happens in main, after binding (proxy/privileges.h).
TEST(ConfigUser, FromTheFileWithItsLine) {
  const Config config =
      ParseToml("threads = 1\nuser = \"nobody\"\n" + std::string(kUpstream), "p.toml");
  EXPECT_EQ(config.user, "nobody");
  EXPECT_EQ(config.user_where, "p.toml:2: user");
}

TEST(ConfigUser, NoneByDefault) {
  const Config config = ParseArgs({"--upstream", "h:110"});
  EXPECT_EQ(config.user, "");
  EXPECT_FALSE(config.check_only);
  EXPECT_EQ(config.config_file, "");
}

TEST(ConfigUser, FlagOverridesTheFile) {
  TempDir dir;
  const std::string file = dir.Write("p.toml", "user = \"nobody\"\n" + std::string(kUpstream));
  EXPECT_EQ(ParseArgs({"-c", file}).user, "nobody");
  const Config config = ParseArgs({"-c", file, "--user", "daemon"});
  EXPECT_EQ(config.user, "daemon");
  EXPECT_EQ(config.user_where, "--user");
  EXPECT_EQ(ParseArgs({"--upstream", "h:110", "--user=nobody"}).user, "nobody");
  // The flag's user is checked even when the file's is good, and the file's even when the
  // flag would replace it: each names its own place.
  EXPECT_EQ(ArgsError({"-c", file, "--user", "popgate-no-such-user"}),
            "--user: no such user \"popgate-no-such-user\"");
  const std::string bad = dir.Write("bad.toml", "\nuser = \"nosuch-x\"\n" + std::string(kUpstream));
  EXPECT_EQ(ArgsError({"-c", bad, "--user", "nobody"}),
            bad + ":2: user: no such user \"nosuch-x\"");
}

TEST(ConfigUser, Errors) {
  EXPECT_EQ(TomlError("user = \"popgate-no-such-user\"\n"),
            "p.toml:1: user: no such user \"popgate-no-such-user\"");
  EXPECT_EQ(TomlError("threads = 2\n\nuser = \"\"\n"),
            "p.toml:3: user: expected a user name, got \"\"");
  EXPECT_EQ(TomlError("user = 65534\n"), "p.toml:1: user: expected a string, got an integer");
  EXPECT_EQ(TomlError("user = [\"nobody\"]\n"), "p.toml:1: user: expected a string, got an array");
  // Root is what leaving `user` out means; naming it drops nothing.
  EXPECT_EQ(TomlError("user = \"root\"\n"),
            "p.toml:1: user: \"root\" is root (uid 0), which drops no privileges; name an "
            "unprivileged user, or leave user out");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--user", "root"}).substr(0, 24),
            "--user: \"root\" is root (");
  EXPECT_EQ(ArgsError({"--upstream", "h:1", "--user", ""}),
            "--user: expected a user name, got \"\"");
  // In a table, `user` is no key of popgate's.
  EXPECT_EQ(TomlError("[limits]\nuser = \"nobody\"\n").substr(0, 37),
            "p.toml:2: limits.user: unknown key (e");
}

TEST(ConfigCheckOnly, DashTRemembersTheFile) {
  TempDir dir;
  const std::string file = dir.Write("p.toml", std::string(kUpstream));
  const Config config = ParseArgs({"-t", "-c", file});
  EXPECT_TRUE(config.check_only);
  EXPECT_EQ(config.config_file, file);
  EXPECT_TRUE(ParseArgs({"--check-config", "--upstream", "h:110"}).check_only);
  // -t checks the configuration; a bad one is the same error as without it.
  EXPECT_EQ(ArgsError({"-t", "--upstream", "h:1", "--threads", "four"}),
            "--threads: expected an integer, got \"four\"");
}

}  // namespace
}  // namespace popgate::config
