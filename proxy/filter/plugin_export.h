#pragma once
// The entry point of a plugin built as a shared object (`use = "so:/path/libx.so"`): what
// a plugin author includes besides filter/plugin.h, then names the function that builds
// the plugin's factory from its options, once, at namespace scope:
//
//   std::shared_ptr<popgate::filter::PluginFactory> Build(const popgate::filter::Options& o);
//   POPGATE_EXPORT_PLUGIN(Build)
//
// The builder runs once at start-up; it throws std::invalid_argument for a bad option and
// popgate stops with that message. Its factory and the plugins it makes follow plugin.h.
//
// Building one: popgate's headers only (add popgate's `proxy` directory to the include
// path), nothing linked from popgate; a MODULE library, with the same compiler family and
// C++ standard library as popgate (and never a static libstdc++). The plugin calls what
// popgate's own code implements (mail::Headers::Add, Message::bytes(), ...) in the popgate
// executable, which exports those symbols. -fvisibility=hidden is fine: the entry points
// below are exported whatever the default.
//
// Checked at load time, before anything else of the plugin runs:
//  - popgate_plugin_abi_version(): POPGATE_PLUGIN_ABI_VERSION as the plugin saw it. Raised
//    with every incompatible change to plugin.h, mail/message.h or mail/headers.h (a
//    layout, a virtual function, a signature); a plugin built for another version is
//    refused.
//  - popgate_plugin_build_tag(): the C++ standard library and its ABI settings
//    (libstdc++'s std::string ABI, its debug mode, the pointer size). std::string,
//    std::map and std::shared_ptr cross the boundary, so a plugin whose library lays them
//    out differently is refused rather than left to crash. GCC and Clang on libstdc++
//    share one tag: libstdc++ keeps these layouts across compiler versions.

#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "filter/plugin.h"

// Overriding it (-D) is for popgate's tests of the refusal only.
#ifndef POPGATE_PLUGIN_ABI_VERSION
#define POPGATE_PLUGIN_ABI_VERSION 4
#endif

#define POPGATE_PLUGIN_STRINGIFY_(x) #x
#define POPGATE_PLUGIN_STRINGIFY(x) POPGATE_PLUGIN_STRINGIFY_(x)

// Overriding it (-D) is for popgate's tests of the refusal only.
#ifndef POPGATE_PLUGIN_BUILD_TAG
#if defined(_LIBCPP_VERSION)
#define POPGATE_PLUGIN_STDLIB_ "libc++ abi " POPGATE_PLUGIN_STRINGIFY(_LIBCPP_ABI_VERSION)
#elif defined(__GLIBCXX__)
#if _GLIBCXX_USE_CXX11_ABI
#define POPGATE_PLUGIN_STDLIB_ "libstdc++ cxx11-abi"
#else
#define POPGATE_PLUGIN_STDLIB_ "libstdc++ old-abi"
#endif
#else
#define POPGATE_PLUGIN_STDLIB_ "unknown stdlib"
#endif
#if defined(_GLIBCXX_DEBUG) || defined(_LIBCPP_DEBUG)
#define POPGATE_PLUGIN_DEBUG_ " debug-containers"
#else
#define POPGATE_PLUGIN_DEBUG_ ""
#endif
#define POPGATE_PLUGIN_BUILD_TAG               \
  POPGATE_PLUGIN_STDLIB_ POPGATE_PLUGIN_DEBUG_ \
      ", " POPGATE_PLUGIN_STRINGIFY(__SIZEOF_POINTER__) "-byte pointers"
#endif

namespace popgate::filter::plugin_export_detail {

// The body of popgate_plugin_create_v1: nothing thrown crosses the boundary.
template <typename Builder>
std::shared_ptr<PluginFactory>* Create(Builder&& build, const Options* options,
                                       std::string* error) noexcept {
  try {
    if (options == nullptr) throw std::invalid_argument("no options given");
    std::shared_ptr<PluginFactory> factory = build(*options);
    if (!factory) throw std::invalid_argument("the plugin's builder returned no factory");
    return new std::shared_ptr<PluginFactory>(std::move(factory));
  } catch (const std::exception& e) {
    if (error != nullptr) *error = e.what();
  } catch (...) {
    if (error != nullptr)
      *error = "the plugin's builder threw something that is not a std::exception";
  }
  return nullptr;
}

}  // namespace popgate::filter::plugin_export_detail

// Defines the plugin's entry points. `builder`: a function (or function object) taking
// `const popgate::filter::Options&` and returning std::shared_ptr<PluginFactory>.
//
// popgate_plugin_create_v1 returns a factory allocated with new (popgate deletes it), or
// nullptr with *error set.
#define POPGATE_EXPORT_PLUGIN(builder)                                                          \
  extern "C" __attribute__((visibility("default"))) int popgate_plugin_abi_version() noexcept { \
    return POPGATE_PLUGIN_ABI_VERSION;                                                          \
  }                                                                                             \
  extern "C" __attribute__((visibility("default"))) const char*                                 \
  popgate_plugin_build_tag() noexcept {                                                         \
    return POPGATE_PLUGIN_BUILD_TAG;                                                            \
  }                                                                                             \
  extern "C" __attribute__((visibility("default")))                                             \
  std::shared_ptr<::popgate::filter::PluginFactory>*                                            \
  popgate_plugin_create_v1(const ::popgate::filter::Options* options,                           \
                           std::string* error) noexcept {                                       \
    return ::popgate::filter::plugin_export_detail::Create(builder, options, error);            \
  }
