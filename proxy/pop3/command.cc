#include "pop3/command.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace popgate::pop3 {
namespace {

struct VerbInfo {
  std::string_view keyword;
  Verb verb;
  std::uint8_t min_args;
  std::uint8_t max_args;
  bool numeric_args;  // every argument a message number / line count
};

// Argument counts from the RFCs. PASS is special-cased: its argument is the rest of
// the line, spaces included (RFC 1939 §7 lets a password contain spaces).
constexpr std::array<VerbInfo, 17> kVerbs{{
    {"USER", Verb::kUser, 1, 1, false},
    {"PASS", Verb::kPass, 1, 1, false},
    {"APOP", Verb::kApop, 2, 2, false},
    {"AUTH", Verb::kAuth, 0, 2, false},
    {"STAT", Verb::kStat, 0, 0, true},
    {"LIST", Verb::kList, 0, 1, true},
    {"UIDL", Verb::kUidl, 0, 1, true},
    {"TOP", Verb::kTop, 2, 2, true},
    {"RETR", Verb::kRetr, 1, 1, true},
    {"DELE", Verb::kDele, 1, 1, true},
    {"NOOP", Verb::kNoop, 0, 0, true},
    {"RSET", Verb::kRset, 0, 0, true},
    {"QUIT", Verb::kQuit, 0, 0, true},
    {"CAPA", Verb::kCapa, 0, 0, true},
    {"STLS", Verb::kStls, 0, 0, true},
    {"UTF8", Verb::kUtf8, 0, 0, true},
    {"LANG", Verb::kLang, 0, 1, false},
}};

constexpr std::size_t kMaxKeyword = 16;

bool IsBlank(char c) { return c == ' ' || c == '\t'; }

std::string Upper(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return out;
}

// RFC 1939 message numbers and TOP line counts: decimal digits only. Bounded so that
// "RETR 000...0001" style input cannot grow without limit.
bool IsNumber(std::string_view s) {
  return !s.empty() && s.size() <= 10 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

bool IsPrintable(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](unsigned char c) { return (c >= 0x20 && c != 0x7f) || c == '\t'; });
}

std::vector<std::string> SplitArgs(std::string_view rest) {
  std::vector<std::string> args;
  std::size_t i = 0;
  while (i < rest.size()) {
    while (i < rest.size() && IsBlank(rest[i])) ++i;
    std::size_t start = i;
    while (i < rest.size() && !IsBlank(rest[i])) ++i;
    if (i > start) args.emplace_back(rest.substr(start, i - start));
  }
  return args;
}

ParseError Error(std::string_view text) { return {"-ERR " + std::string(text) + "\r\n"}; }

const VerbInfo* FindVerb(std::string_view keyword) {
  for (const auto& info : kVerbs) {
    if (info.keyword == keyword) return &info;
  }
  return nullptr;
}

}  // namespace

std::string Command::Canonical() const {
  std::string line = keyword;
  for (const auto& arg : args) {
    line += ' ';
    line += arg;
  }
  line += "\r\n";
  return line;
}

bool Command::MultiLineIfOk() const {
  switch (verb) {
    case Verb::kRetr:
    case Verb::kTop:
    case Verb::kCapa:
      return true;
    case Verb::kList:
    case Verb::kUidl:
    case Verb::kLang:
      return args.empty();
    case Verb::kAuth:
      // AUTH without a mechanism lists the mechanisms (a widespread extension).
      return args.empty();
    default:
      return false;
  }
}

bool Command::CarriesSecret() const {
  return verb == Verb::kPass || verb == Verb::kApop || verb == Verb::kAuth;
}

ParseResult ParseCommand(std::string_view line, const ParseOptions& options) {
  if (line.find('\0') != std::string_view::npos || line.find('\r') != std::string_view::npos) {
    return Error("Invalid characters in command");
  }
  std::size_t end = 0;
  while (end < line.size() && !IsBlank(line[end])) ++end;
  std::string_view raw_keyword = line.substr(0, end);
  if (raw_keyword.empty()) return Error("Empty command");
  if (raw_keyword.size() > kMaxKeyword || !IsPrintable(raw_keyword)) {
    return Error("Unknown command");
  }
  std::string keyword = Upper(raw_keyword);
  std::string_view rest = line.substr(end);

  const VerbInfo* info = FindVerb(keyword);
  if (info == nullptr) {
    bool relayed = std::find(options.pass_through.begin(), options.pass_through.end(), keyword) !=
                   options.pass_through.end();
    if (!relayed) return Error("Unknown command");
    if (!IsPrintable(rest)) return Error("Invalid characters in command");
    return Command{Verb::kPassThrough, keyword, SplitArgs(rest)};
  }

  if (info->verb == Verb::kPass) {
    // Exactly one separator; everything after it is the password.
    if (rest.empty() || rest.size() < 2) return Error("PASS needs a password");
    std::string_view password = rest.substr(1);
    return Command{Verb::kPass, keyword, {std::string(password)}};
  }

  if (!IsPrintable(rest)) return Error("Invalid characters in command");
  std::vector<std::string> args = SplitArgs(rest);
  if (args.size() < info->min_args || args.size() > info->max_args) {
    return Error("Wrong number of arguments for " + keyword);
  }
  if (info->numeric_args) {
    for (auto& arg : args) {
      if (!IsNumber(arg)) return Error("Invalid number for " + keyword);
    }
    // A message number is at least 1 (RFC 1939 §3); TOP's line count may be 0.
    if (!args.empty() && std::stoul(args[0]) == 0) return Error("No such message");
  }
  if (info->verb == Verb::kAuth && !args.empty()) {
    args[0] = Upper(args[0]);
  }
  return Command{info->verb, keyword, std::move(args)};
}

bool AllowedIn(Verb verb, State state) {
  switch (verb) {
    case Verb::kQuit:
    case Verb::kCapa:
    case Verb::kLang:
    case Verb::kPassThrough:
      return true;
    case Verb::kUser:
    case Verb::kPass:
    case Verb::kApop:
    case Verb::kAuth:
    case Verb::kStls:
    case Verb::kUtf8:
      return state == State::kAuthorization;
    default:
      return state == State::kTransaction;
  }
}

std::string WrongStateReply(const Command& command, State state) {
  if (state == State::kAuthorization) {
    return "-ERR " + command.keyword + " not allowed before login\r\n";
  }
  return "-ERR " + command.keyword + " not allowed after login\r\n";
}

}  // namespace popgate::pop3
