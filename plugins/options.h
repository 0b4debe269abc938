#pragma once
// Reading a plugin's options. Values arrive as their TOML text ("\"127.0.0.1:783\"",
// "512000"); a bad or unknown option throws std::invalid_argument naming it, and
// start-up stops with that line.

#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>

#include "filter/plugin.h"

namespace popgate::plugins {

// A TOML basic or literal string's contents.
inline std::string OptionString(const filter::Options& options, std::string_view key,
                                std::string fallback) {
  auto it = options.find(key);
  if (it == options.end()) return fallback;
  const std::string& text = it->second;
  if (text.size() >= 2 && text.front() == '\'' && text.back() == '\'') {
    return text.substr(1, text.size() - 2);
  }
  if (text.size() < 2 || text.front() != '"' || text.back() != '"') {
    throw std::invalid_argument(std::string(key) + ": expected a string, got " + text);
  }
  std::string value;
  for (std::size_t i = 1; i + 1 < text.size(); ++i) {
    char c = text[i];
    if (c == '\\' && i + 2 < text.size()) {
      char next = text[++i];
      value += next == 'n' ? '\n' : next == 't' ? '\t' : next;
    } else {
      value += c;
    }
  }
  return value;
}

inline std::int64_t OptionInteger(const filter::Options& options, std::string_view key,
                                  std::int64_t fallback, std::int64_t min, std::int64_t max) {
  auto it = options.find(key);
  if (it == options.end()) return fallback;
  std::int64_t value = 0;
  const std::string& text = it->second;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    throw std::invalid_argument(std::string(key) + ": expected an integer from " +
                                std::to_string(min) + " to " + std::to_string(max) + ", got " +
                                text);
  }
  return value;
}

inline void CheckKnownOptions(const filter::Options& options,
                              std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : options) {
    bool found = false;
    for (auto name : known) found = found || name == key;
    if (!found) throw std::invalid_argument(key + ": unknown option");
  }
}

}  // namespace popgate::plugins
