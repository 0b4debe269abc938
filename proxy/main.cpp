// popgate: wiring only. Parse the configuration, set up logging, start the server,
// give up root (`user`), run the I/O threads until SIGTERM/SIGINT has drained the
// sessions. With -t: every start-up step that binds and connects nothing, then exit.

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "chain_from_config.h"
#include "config/config.h"
#include "net/asio.h"
#include "net/io_pool.h"
#include "net/server.h"
#include "net/tls.h"
#include "plugins/builtin.h"
#include "privileges.h"
#include "python_plugins.h"
#include "quarantine/maildir_quarantine.h"

namespace {

constexpr int kExitConfig = 2;

spdlog::level::level_enum ToSpdlog(popgate::config::LogLevel level) {
  using popgate::config::LogLevel;
  switch (level) {
    case LogLevel::kTrace:
      return spdlog::level::trace;
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

// A Maildir's directories, as MaildirQuarantine makes them.
std::vector<std::string> MaildirDirectories(const std::string& path) {
  return {path + "/tmp", path + "/new", path + "/cur"};
}

// Switches to `run_as` (see main for when), then checks that the directories popgate
// writes to from now on take the account's files. Without `user`, running as root is
// allowed but said. Prints why and returns false when the switch or a check fails.
bool GiveUpRoot(const popgate::config::Config& config,
                const std::optional<popgate::privileges::Account>& run_as) {
  namespace privileges = popgate::privileges;
  if (!run_as) {
    if (::geteuid() == 0) {
      spdlog::warn(
          "running as root: sessions and plugins keep root's privileges; set user = "
          "\"NAME\" (or --user NAME) to run as an unprivileged user after start-up");
    }
    return true;
  }
  try {
    privileges::SwitchTo(*run_as);
  } catch (const privileges::PrivilegeError& error) {
    std::fprintf(stderr, "popgate: %s: %s\n", config.user_where.c_str(), error.what());
    return false;
  }
  try {
    if (!config.quarantine_path.empty()) {
      // Store writes into tmp/ and links into new/; cur/ is the readers'.
      for (const char* dir : {"/tmp", "/new"}) {
        privileges::RequireWritableDirectory(config.quarantine_path + dir, config.quarantine_where,
                                             *run_as);
      }
    }
    privileges::RequireWritableDirectory(config.limits.spool_dir, config.limits.spool_dir_where,
                                         *run_as);
  } catch (const privileges::PrivilegeError& error) {
    std::fprintf(stderr, "popgate: %s\n", error.what());
    return false;
  }
  spdlog::info("running as user {} (uid {}, gid {})", run_as->name, run_as->uid, run_as->gid);
  return true;
}

// -t: what Server::Start would load (certificates, keys, the upstream's CA file), without
// resolving, binding or connecting. Prints why and returns false on the first failure.
bool LoadCertificates(const popgate::config::Config& config) {
  using namespace popgate;
  try {
    for (const config::Listener& listener : config.listeners) {
      if (listener.tls != config::TlsMode::kNone) net::MakeServerContext(listener);
    }
    if (config.upstream.tls != config::TlsMode::kNone) net::MakeClientContext(config.upstream);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "popgate: %s\n", e.what());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace popgate;
  // A peer that went away is an error on the write that meets it, never a signal that
  // ends every session: popgate's own sockets send with MSG_NOSIGNAL, but a plugin's
  // (a Python plugin's socket to rspamd or clamd, a C++ plugin's pipe) may not.
  std::signal(SIGPIPE, SIG_IGN);

  config::Config config;
  try {
    config = config::Parse(argc, argv);
  } catch (const config::HelpRequested& help) {
    std::fputs(help.what(), stdout);
    return 0;
  } catch (const config::ConfigError& error) {
    std::fprintf(stderr, "popgate: %s\n", error.what());
    return kExitConfig;
  }
  // Before any plugin is made: what plugins log while they start (a Python plugin's
  // configure, a chain warning) goes to popgate's log on stderr, not spdlog's default
  // logger on stdout.
  auto logger = spdlog::stderr_color_mt("popgate");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(ToSpdlog(config.log_level));
  spdlog::flush_on(spdlog::level::info);

  // Whom to run as, and whether popgate can become it, is settled before anything starts:
  // started as the wrong user, popgate stops here, not after loading every plugin.
  std::optional<privileges::Account> run_as;
  if (!config.user.empty()) {
    try {
      run_as = privileges::LookUp(config.user, config.user_where);
      privileges::RequireCanSwitchTo(*run_as, config.user_where);
    } catch (const privileges::PrivilegeError& error) {
      std::fprintf(stderr, "popgate: %s\n", error.what());
      return kExitConfig;
    }
  }

  plugins::RegisterBuiltinPlugins();
  // Only with a Python plugin configured. Declared before the chain, whose factories
  // call into it, and before the I/O threads, whose sessions hold plugin instances.
  std::unique_ptr<bindings::PythonRuntime> python;
  filter::FilterChain chain;
  try {
    python = StartPythonIfConfigured(config);
    chain = ChainFromConfig(
        config, [](std::string_view line) { spdlog::warn("{}", line); },
        python ? PythonLoaderFor(*python) : PythonLoader{});
  } catch (const std::invalid_argument& error) {
    std::fprintf(stderr, "popgate: %s\n", error.what());
    return kExitConfig;
  } catch (const bindings::PythonPluginError& error) {
    // The traceback, whole: the plugin's author needs every line of it.
    std::fprintf(stderr, "popgate: %s\n", error.what());
    return kExitConfig;
  }

  unsigned threads =
      config.threads ? config.threads : std::max(1u, std::thread::hardware_concurrency());
  std::unique_ptr<quarantine::MaildirQuarantine> quarantine;
  if (!config.quarantine_path.empty()) {
    try {
      // Made here, as root, the quarantine's missing directories are the account's: it
      // stores into them after the switch. One an admin made keeps its owner, and must
      // let the account write (checked after the switch).
      if (run_as) {
        for (const std::string& dir : MaildirDirectories(config.quarantine_path)) {
          privileges::MakeMissingDirectoriesFor(*run_as, dir);
        }
      }
      quarantine = std::make_unique<quarantine::MaildirQuarantine>(
          config.quarantine_path, [](std::string_view line) { spdlog::warn("{}", line); });
    } catch (const std::exception& e) {
      std::fprintf(stderr, "popgate: %s: %s\n", config.quarantine_where.c_str(), e.what());
      return kExitConfig;
    }
  }

  // -t: what is left of start-up without a socket: the certificates, and the switch to
  // `user` with its checks (after it, the process is good for nothing but exiting).
  if (config.check_only) {
    if (!LoadCertificates(config) || !GiveUpRoot(config, run_as)) return kExitConfig;
    const std::string what =
        config.config_file.empty() ? "configuration" : "configuration " + config.config_file;
    std::printf("popgate: %s is ok\n", what.c_str());
    return 0;
  }

  // Where hook calls run: worker plugins (which may block: spamd, a web service) on the
  // hook threads, which give up on a call after its plugin's timeout; inline plugins on
  // the session's own thread; Python's on its runtime's threads. Sessions await each
  // call; no thread waits for one. The filter pool only writes rejected messages to the
  // quarantine. Declared before the io_context so they outlive every session.
  filter::HookThreads hook_threads;
  net::asio::thread_pool filter_pool(16);
  net::IoPool io(threads);
  net::Server server(io, config,
                     net::FilterContext{&chain, &filter_pool, &hook_threads, quarantine.get()});
  // Both handlers are installed before the listeners announce themselves, so a signal
  // sent as soon as "listening" is logged is never met by the default action (death).
  // SIGHUP: Python plugins load their code again; running sessions finish on the old.
  // The rest of the configuration is read again only on restart.
  net::asio::signal_set hangup(io.main(), SIGHUP);
  std::function<void()> wait_for_hangup = [&] {
    hangup.async_wait([&](const net::error_code& ec, int) {
      if (ec) return;
      if (python) {
        spdlog::info("SIGHUP: reloading Python plugins");
        python->Reload();
      } else {
        spdlog::info("SIGHUP: nothing to reload (no Python plugin configured)");
      }
      wait_for_hangup();
    });
  };
  wait_for_hangup();
  // SIGTERM/SIGINT: stop accepting, let sessions finish, then stop the threads.
  net::asio::signal_set signals(io.main(), SIGTERM, SIGINT);
  signals.async_wait([&](const net::error_code& ec, int signal) {
    if (ec) return;
    spdlog::info("signal {} received", signal);
    hangup.cancel();
    server.Shutdown([&io] { io.Stop(); });
  });
  try {
    server.Start();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "popgate: %s\n", e.what());
    return kExitConfig;
  }
  // Root is given up here, and why here: what needs root is done by now (listeners bound,
  // ports below 1024 too; certificates and keys read; the quarantine made; plugins made
  // and configured, so the audit log is open and Python plugins are loaded, their files
  // read as root), and nothing has run a session or a hook yet. The threads that will:
  // the I/O threads (io.Run), Python's loop and sync hook threads (python->Run) and the
  // hook threads (made on a plugin's first call) start after it, so they are born
  // unprivileged. Threads already there (the filter pool's, any a Python plugin started
  // in configure()) switch too: glibc runs setuid/setgid/setgroups on every thread of
  // the process, and SwitchTo checks every thread's ids in /proc/self/task.
  if (!GiveUpRoot(config, run_as)) return kExitConfig;
  // From here the main thread never holds the GIL: Python's own threads take it.
  if (python) python->Run();

  io.Run();
  filter_pool.join();
  // Sessions are drained: done() of every Python plugin, then the interpreter goes.
  if (python) python->Stop();
  spdlog::info("stopped");
  return 0;
}
