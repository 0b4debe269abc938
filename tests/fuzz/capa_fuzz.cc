// libFuzzer target for CAPA responses (pop3::Capabilities): the input is the content of
// a CAPA answer from the upstream (un-stuffed lines), parsed, queried, rewritten under
// every policy and serialised.
//
// Invariants (pop3/capa.h, HAZARDS.md "TLS and STARTTLS"):
// - parsing keeps every non-empty line, in order, without its line ending (a reference
//   split at LF, one CR dropped); the output is bounded by the input (one CRLF per line);
// - serialising and parsing again gives the same lines (round trip);
// - Has and Arguments agree with the lines' first words;
// - after Rewrite: no upstream STLS (one "STLS" at the end exactly when offered), no
//   USER or SASL when logins are hidden, every SASL line offers a mechanism and none
//   that cannot be relayed (-PLUS, GSSAPI, DIGEST-MD5), every other line is kept as it
//   was and in order; rewriting again changes nothing.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "pop3/capa.h"

namespace {

using popgate::pop3::Capabilities;
using popgate::pop3::CapaPolicy;

char Upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

std::string UpperCase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = Upper(c);
  return out;
}

std::string_view FirstWord(std::string_view line) { return line.substr(0, line.find(' ')); }

std::vector<std::string> Words(std::string_view text) {
  std::vector<std::string> words;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t space = text.find(' ', pos);
    std::size_t end = space == std::string_view::npos ? text.size() : space;
    if (end > pos) words.emplace_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return words;
}

std::vector<std::string> ReferenceLines(std::string_view content) {
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < content.size()) {
    std::size_t lf = content.find('\n', pos);
    std::size_t end = lf == std::string_view::npos ? content.size() : lf;
    std::string_view line = content.substr(pos, end - pos);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (!line.empty()) lines.emplace_back(line);
    pos = end + 1;
  }
  return lines;
}

bool Relayable(std::string_view mechanism) {
  std::string upper = UpperCase(mechanism);
  if (upper.size() > 5 && upper.ends_with("-PLUS")) return false;
  return upper != "GSSAPI" && upper != "DIGEST-MD5";
}

// What Rewrite must leave: the lines in order, SASL lines rebuilt, STLS last if offered.
std::vector<std::string> ReferenceRewrite(const std::vector<std::string>& lines,
                                          const CapaPolicy& policy) {
  std::vector<std::string> out;
  for (const auto& line : lines) {
    std::string keyword = UpperCase(FirstWord(line));
    if (keyword == "STLS") continue;
    if (policy.hide_logins && (keyword == "USER" || keyword == "SASL")) continue;
    if (keyword == "SASL") {
      std::string rebuilt(FirstWord(line));
      for (const auto& mechanism : Words(std::string_view(line).substr(rebuilt.size()))) {
        if (Relayable(mechanism)) rebuilt += " " + mechanism;
      }
      if (rebuilt.size() > FirstWord(line).size()) out.push_back(rebuilt);
      continue;
    }
    out.push_back(line);
  }
  if (policy.offer_stls) out.emplace_back("STLS");
  return out;
}

// Has and Arguments for the usual names and for every line's own first word.
void CheckQueries(const Capabilities& capa) {
  std::vector<std::string> names = {"SASL", "USER", "STLS", "TOP", "PIPELINING", "UIDL"};
  for (const auto& line : capa.lines()) {
    std::string_view keyword = FirstWord(line);
    FUZZ_CHECK(capa.Has(keyword));
    FUZZ_CHECK(capa.Has(UpperCase(keyword)));
    if (names.size() < 32) names.emplace_back(keyword);
  }
  for (const std::string& name : names) {
    const std::string* first = nullptr;
    for (const auto& line : capa.lines()) {
      if (UpperCase(FirstWord(line)) == UpperCase(name)) {
        first = &line;
        break;
      }
    }
    FUZZ_CHECK(capa.Has(name) == (first != nullptr));
    std::vector<std::string> expected;
    if (first) {
      expected = Words(*first);
      if (!expected.empty()) expected.erase(expected.begin());  // a line of spaces: none
    }
    FUZZ_CHECK(capa.Arguments(name) == expected);
  }
}

void CheckRoundTrip(const Capabilities& capa) {
  const std::string wire = capa.Serialize();
  std::size_t expected_size = 0;
  for (const auto& line : capa.lines()) {
    FUZZ_CHECK(!line.empty());
    FUZZ_CHECK(line.find('\n') == std::string::npos);
    expected_size += line.size() + 2;
  }
  FUZZ_CHECK(wire.size() == expected_size);
  FUZZ_CHECK(Capabilities::Parse(wire).lines() == capa.lines());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view data(reinterpret_cast<const char*>(bytes), size);

  const Capabilities capa = Capabilities::Parse(data);
  FUZZ_CHECK(capa.lines() == ReferenceLines(data));
  // Bounded: each line keeps its bytes and gains at most one CR.
  FUZZ_CHECK(capa.Serialize().size() <= data.size() + capa.lines().size() + 1);
  CheckQueries(capa);
  CheckRoundTrip(capa);

  for (int bits = 0; bits < 4; ++bits) {
    CapaPolicy policy;
    policy.offer_stls = (bits & 1) != 0;
    policy.hide_logins = (bits & 2) != 0;
    Capabilities rewritten = capa;
    rewritten.Rewrite(policy);
    FUZZ_CHECK(rewritten.lines() == ReferenceRewrite(capa.lines(), policy));
    FUZZ_CHECK(rewritten.Serialize().size() <= capa.Serialize().size() + 6);

    FUZZ_CHECK(rewritten.Has("STLS") == policy.offer_stls);
    if (policy.offer_stls) FUZZ_CHECK(rewritten.lines().back() == "STLS");
    if (policy.hide_logins) FUZZ_CHECK(!rewritten.Has("USER") && !rewritten.Has("SASL"));
    for (const auto& line : rewritten.lines()) {
      if (UpperCase(FirstWord(line)) != "SASL") continue;
      std::vector<std::string> mechanisms = Words(line);
      FUZZ_CHECK(mechanisms.size() >= 2);
      for (std::size_t i = 1; i < mechanisms.size(); ++i) FUZZ_CHECK(Relayable(mechanisms[i]));
    }
    CheckQueries(rewritten);
    CheckRoundTrip(rewritten);

    Capabilities twice = rewritten;
    twice.Rewrite(policy);
    FUZZ_CHECK(twice.lines() == rewritten.lines());
  }
  return 0;
}
