// Plugins loaded from shared objects (filter/shared_object.h), with the example plugin
// built outside the core (tests/so_plugin): it loads, runs in the chain like any plugin,
// and outlives whatever held it; a library built for another ABI or C++ library, a missing
// file and a library without the entry points are each refused with a clear message.
//
// The library paths come from the build (compile definitions); this executable exports its
// symbols (ENABLE_EXPORTS), as popgate does, for the plugin's calls into mail::Headers.

#include "filter/shared_object.h"

#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "filter/chain.h"
#include "filter/plugin_export.h"
#include "mail/message.h"

namespace popgate::filter {
namespace {

const std::string kMessage =
    "From: a@example.com\r\nSubject: hi\r\n\r\nbody line\r\n.leading dot\r\n";

MessageContext Retr() {
  MessageContext context;
  context.command = "RETR";
  context.number = 1;
  return context;
}

ChainEntry Entry(std::shared_ptr<PluginFactory> factory) {
  ChainEntry entry;
  entry.factory = std::move(factory);
  return entry;
}

// The message `factory`'s plugin makes of kMessage, through a chain of one.
mail::Message RunThrough(std::shared_ptr<PluginFactory> factory, MessageReport* report = nullptr) {
  FilterChain chain({Entry(std::move(factory))});
  ChainSession session = chain.NewSession(SessionInfo{});
  EXPECT_TRUE(session.Start());
  mail::Message message(kMessage);
  MessageReport result = session.RunMessage(Retr(), message);
  session.End();
  if (report) *report = result;
  return message;
}

// What LoadSharedObjectPlugin throws for `path`, or "" if it loads.
std::string LoadError(const std::string& path, const Options& options = {}) {
  try {
    LoadSharedObjectPlugin(path, options);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(SharedObjectPlugin, AddsItsHeaderThroughTheChain) {
  auto factory = LoadSharedObjectPlugin(POPGATE_TEST_ADD_HEADER_SO, {});
  ASSERT_NE(factory, nullptr);
  EXPECT_EQ(factory->name(), "add_header");
  MessageReport report;
  mail::Message message = RunThrough(factory, &report);
  EXPECT_EQ(report.result.verdict, Verdict::kPass);
  ASSERT_EQ(report.runs.size(), 1u);
  EXPECT_EQ(report.runs[0].plugin, "add_header");
  EXPECT_EQ(report.runs[0].failure, PluginRun::Failure::kNone);
  EXPECT_EQ(message.headers().Get("X-Popgate-Example"), "1");
  EXPECT_EQ(message.bytes(),
            "From: a@example.com\r\nSubject: hi\r\nX-Popgate-Example: 1\r\n\r\n"
            "body line\r\n.leading dot\r\n");
}

TEST(SharedObjectPlugin, AsksForHeadersAndTheMessageHookOnly) {
  auto factory = LoadSharedObjectPlugin(POPGATE_TEST_ADD_HEADER_SO, {});
  std::unique_ptr<Plugin> plugin = factory->Create();
  ASSERT_NE(plugin, nullptr);
  EXPECT_EQ(plugin->name(), "add_header");
  EXPECT_EQ(plugin->needs(), Needs::kHeaders);
  Hooks hooks = plugin->hooks();
  EXPECT_FALSE(hooks.session);
  EXPECT_FALSE(hooks.command);
  EXPECT_TRUE(hooks.message);
  EXPECT_FALSE(hooks.message_done);
  EXPECT_EQ(plugin->execution(), Execution::kInline);

  FilterChain chain({Entry(factory)});
  ChainSession session = chain.NewSession(SessionInfo{});
  ASSERT_TRUE(session.Start());
  EXPECT_EQ(session.needs(), Needs::kHeaders);
  EXPECT_TRUE(session.runs_inline());
  EXPECT_FALSE(session.wants_commands());
  EXPECT_TRUE(session.wants_messages());
  session.End();
}

TEST(SharedObjectPlugin, PassesItsOptions) {
  auto factory = LoadSharedObjectPlugin(POPGATE_TEST_ADD_HEADER_SO, {{"value", "hello there"}});
  mail::Message message = RunThrough(factory);
  EXPECT_EQ(message.headers().Get("X-Popgate-Example"), "hello there");
}

TEST(SharedObjectPlugin, TheBuildersErrorComesThrough) {
  EXPECT_EQ(LoadError(POPGATE_TEST_ADD_HEADER_SO, {{"colour", "red"}}), "colour: unknown option");
  EXPECT_EQ(LoadError(POPGATE_TEST_ADD_HEADER_SO, {{"value", 3}}),
            "value: expected a string, got 3");
}

TEST(SharedObjectPlugin, InstancesOutliveTheFactoryAndTheChain) {
  // The library stays loaded while anything made from it lives: here only an instance,
  // held by a session whose chain and factory are gone.
  std::unique_ptr<ChainSession> session;
  {
    auto chain = std::make_unique<FilterChain>(std::vector<ChainEntry>{
        Entry(LoadSharedObjectPlugin(POPGATE_TEST_ADD_HEADER_SO, {{"value", "late"}}))});
    session = std::make_unique<ChainSession>(chain->NewSession(SessionInfo{}));
    ASSERT_TRUE(session->Start());
  }
  mail::Message message(kMessage);
  session->RunMessage(Retr(), message);
  EXPECT_EQ(message.headers().Get("X-Popgate-Example"), "late");
  session->End();
  session.reset();

  // And a plugin instance alone, after its factory.
  auto factory = LoadSharedObjectPlugin(POPGATE_TEST_ADD_HEADER_SO, {});
  std::unique_ptr<Plugin> plugin = factory->Create();
  factory.reset();
  mail::Message alone(kMessage);
  EXPECT_EQ(plugin->OnMessage(SessionInfo{}, MessageContext{}, alone).verdict, Verdict::kPass);
  EXPECT_TRUE(alone.headers().Has("X-Popgate-Example"));
}

TEST(SharedObjectPlugin, LoadsTwiceWithDifferentOptions) {
  auto one = LoadSharedObjectPlugin(POPGATE_TEST_ADD_HEADER_SO, {{"value", "one"}});
  auto two = LoadSharedObjectPlugin(POPGATE_TEST_ADD_HEADER_SO, {{"value", "two"}});
  FilterChain chain({Entry(one), Entry(two)});
  ChainSession session = chain.NewSession(SessionInfo{});
  ASSERT_TRUE(session.Start());
  mail::Message message(kMessage);
  session.RunMessage(Retr(), message);
  session.End();
  EXPECT_EQ(message.headers().GetAll("X-Popgate-Example"),
            (std::vector<std::string>{"one", "two"}));
}

TEST(SharedObjectPlugin, RefusesAnotherAbiVersion) {
  EXPECT_EQ(LoadError(POPGATE_TEST_WRONG_ABI_SO),
            "built for plugin ABI 999, popgate has " + std::to_string(POPGATE_PLUGIN_ABI_VERSION));
}

TEST(SharedObjectPlugin, RefusesAnotherCppLibrary) {
  std::string error = LoadError(POPGATE_TEST_WRONG_TAG_SO);
  EXPECT_NE(error.find("built with \"some other C++ library\", popgate with \""), std::string::npos)
      << error;
  EXPECT_NE(error.find(POPGATE_PLUGIN_BUILD_TAG), std::string::npos) << error;
}

TEST(SharedObjectPlugin, RefusesALibraryWithoutTheEntryPoints) {
  EXPECT_EQ(LoadError(POPGATE_TEST_NOT_A_PLUGIN_SO),
            "not a popgate plugin (no popgate_plugin_abi_version)");
}

TEST(SharedObjectPlugin, AMissingFileSaysWhy) {
  std::string error = LoadError("/nonexistent/libnothing.so");
  EXPECT_EQ(error.rfind("cannot load: ", 0), 0u) << error;
  EXPECT_NE(error.find("/nonexistent/libnothing.so"), std::string::npos) << error;
  EXPECT_NE(error.find("No such file or directory"), std::string::npos) << error;
}

TEST(SharedObjectPlugin, ANameWithoutSlashIsAFileNotALibrarySearch) {
  // libm.so.6 is on the library path, but not in the working directory.
  std::string error = LoadError("libm.so.6");
  EXPECT_NE(error.find("./libm.so.6"), std::string::npos) << error;
}

TEST(SharedObjectPlugin, AFileThatIsNoLibrarySaysWhy) {
  std::string error = LoadError(POPGATE_TEST_SOURCE_FILE);
  EXPECT_EQ(error.rfind("cannot load: ", 0), 0u) << error;
}

TEST(SharedObjectPlugin, AnEmptyPathIsRefused) {
  EXPECT_EQ(LoadError(""), "expected a path after \"so:\"");
}

}  // namespace
}  // namespace popgate::filter
