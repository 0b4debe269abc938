#pragma once
// A plugin's options, with their TOML types: every key of its [[plugin]] table but `use`.
// The configuration is parsed once, by popgate; a plugin reads typed values (the accessors
// below, for C++; native values, for Python) and never parses TOML itself.
//
// A bad or unknown option throws std::invalid_argument whose text starts with the key
// ("max_size: expected an integer from 0 to 100, got \"big\""); popgate prefixes where the
// table is and stops start-up with that line.

#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace popgate::filter {

class OptionValue {
 public:
  using Array = std::vector<OptionValue>;
  // A TOML table, its keys sorted (as the TOML parser keeps them).
  using Table = std::vector<std::pair<std::string, OptionValue>>;

  OptionValue() = default;                                      // the empty string
  OptionValue(std::string text) : value_(std::move(text)) {}    // NOLINT: implicit on purpose
  OptionValue(const char* text) : value_(std::string(text)) {}  // NOLINT
  OptionValue(std::int64_t number) : value_(number) {}          // NOLINT
  OptionValue(int number) : value_(std::int64_t{number}) {}     // NOLINT
  OptionValue(double number) : value_(number) {}                // NOLINT
  OptionValue(bool flag) : value_(flag) {}                      // NOLINT
  OptionValue(Array items) : value_(std::move(items)) {}        // NOLINT
  OptionValue(Table table) : value_(std::move(table)) {}        // NOLINT

  // The value if it has that type, else null. (TOML dates and times arrive as strings.)
  const std::string* string() const { return std::get_if<std::string>(&value_); }
  const std::int64_t* integer() const { return std::get_if<std::int64_t>(&value_); }
  const double* floating() const { return std::get_if<double>(&value_); }
  const bool* boolean() const { return std::get_if<bool>(&value_); }
  const Array* array() const { return std::get_if<Array>(&value_); }
  const Table* table() const { return std::get_if<Table>(&value_); }

  // As TOML would write it, for error messages: "\"text\"", "12", "[1, 2]", "{ a = 1 }".
  std::string ToToml() const;

  bool operator==(const OptionValue&) const = default;

 private:
  std::variant<std::string, std::int64_t, double, bool, Array, Table> value_;
};

using Options = std::map<std::string, OptionValue, std::less<>>;

inline constexpr std::string_view kCommonOptionKeys[] = {"timeout", "on_error"};

// Typed reads, each with the value to use when the key is absent.
std::string OptionString(const Options& options, std::string_view key, std::string fallback);
std::int64_t OptionInteger(const Options& options, std::string_view key, std::int64_t fallback,
                           std::int64_t min, std::int64_t max);
bool OptionBool(const Options& options, std::string_view key, bool fallback);
// An integer or a float, as a double.
double OptionNumber(const Options& options, std::string_view key, double fallback);
std::vector<std::string> OptionStrings(const Options& options, std::string_view key,
                                       std::vector<std::string> fallback);

// Throws on the first key not in `known` and not one of the keys every [[plugin]] table may
// have (kCommonOptionKeys: the chain reads them, and a plugin may too).
void CheckKnownOptions(const Options& options, std::initializer_list<std::string_view> known);

// Definitions: inline, so shared-object plugins carry their own copy.

namespace options_detail {

inline std::string QuotedToml(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned char>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

inline bool IsBareKey(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

inline const OptionValue* Find(const Options& options, std::string_view key) {
  auto it = options.find(key);
  return it == options.end() ? nullptr : &it->second;
}

[[noreturn]] inline void Expected(std::string_view key, std::string_view what,
                                  const OptionValue& got) {
  throw std::invalid_argument(std::string(key) + ": expected " + std::string(what) + ", got " +
                              got.ToToml());
}

}  // namespace options_detail

inline std::string OptionValue::ToToml() const {
  using namespace options_detail;
  if (const std::string* text = string()) return QuotedToml(*text);
  if (const std::int64_t* number = integer()) return std::to_string(*number);
  if (const double* number = floating()) {
    char text[32];
    std::snprintf(text, sizeof text, "%.17g", *number);
    return text;
  }
  if (const bool* flag = boolean()) return *flag ? "true" : "false";
  if (const Array* items = array()) {
    std::string text = "[";
    for (const OptionValue& item : *items) {
      if (text.size() > 1) text += ", ";
      text += item.ToToml();
    }
    return text + "]";
  }
  std::string text = "{";
  for (const auto& [key, value] : *table()) {
    text += text.size() == 1 ? " " : ", ";
    text += (IsBareKey(key) ? key : QuotedToml(key)) + " = " + value.ToToml();
  }
  return text + (text.size() == 1 ? "}" : " }");
}

inline std::string OptionString(const Options& options, std::string_view key,
                                std::string fallback) {
  const OptionValue* value = options_detail::Find(options, key);
  if (!value) return fallback;
  if (const std::string* text = value->string()) return *text;
  options_detail::Expected(key, "a string", *value);
}

inline std::int64_t OptionInteger(const Options& options, std::string_view key,
                                  std::int64_t fallback, std::int64_t min, std::int64_t max) {
  const OptionValue* value = options_detail::Find(options, key);
  if (!value) return fallback;
  const std::int64_t* number = value->integer();
  if (!number || *number < min || *number > max) {
    options_detail::Expected(
        key, "an integer from " + std::to_string(min) + " to " + std::to_string(max), *value);
  }
  return *number;
}

inline bool OptionBool(const Options& options, std::string_view key, bool fallback) {
  const OptionValue* value = options_detail::Find(options, key);
  if (!value) return fallback;
  if (const bool* flag = value->boolean()) return *flag;
  options_detail::Expected(key, "true or false", *value);
}

inline double OptionNumber(const Options& options, std::string_view key, double fallback) {
  const OptionValue* value = options_detail::Find(options, key);
  if (!value) return fallback;
  if (const double* number = value->floating()) return *number;
  if (const std::int64_t* number = value->integer()) return static_cast<double>(*number);
  options_detail::Expected(key, "a number", *value);
}

inline std::vector<std::string> OptionStrings(const Options& options, std::string_view key,
                                              std::vector<std::string> fallback) {
  const OptionValue* value = options_detail::Find(options, key);
  if (!value) return fallback;
  std::vector<std::string> strings;
  if (const OptionValue::Array* items = value->array()) {
    for (const OptionValue& item : *items) {
      const std::string* text = item.string();
      if (!text) options_detail::Expected(key, "a list of strings", *value);
      strings.push_back(*text);
    }
    return strings;
  }
  options_detail::Expected(key, "a list of strings", *value);
}

inline void CheckKnownOptions(const Options& options,
                              std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : options) {
    bool found = false;
    for (auto name : known) found = found || name == key;
    for (auto name : kCommonOptionKeys) found = found || name == key;
    if (!found) throw std::invalid_argument(key + ": unknown option");
  }
}

}  // namespace popgate::filter
