#include "pop3/capa.h"

#include <algorithm>
#include <cctype>

namespace popgate::pop3 {
namespace {

std::string_view Keyword(std::string_view line) {
  return line.substr(0, std::min(line.find(' '), line.size()));
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) ==
                  std::toupper(static_cast<unsigned char>(y));
         });
}

std::vector<std::string> Words(std::string_view text) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && text[i] == ' ') ++i;
    std::size_t start = i;
    while (i < text.size() && text[i] != ' ') ++i;
    if (i > start) words.emplace_back(text.substr(start, i - start));
  }
  return words;
}

bool CanRelayMechanism(std::string_view mechanism) {
  if (mechanism.size() > 5 && EqualsIgnoreCase(mechanism.substr(mechanism.size() - 5), "-PLUS")) {
    return false;
  }
  return !EqualsIgnoreCase(mechanism, "GSSAPI") && !EqualsIgnoreCase(mechanism, "DIGEST-MD5");
}

}  // namespace

Capabilities Capabilities::Parse(std::string_view content) {
  Capabilities capa;
  std::size_t pos = 0;
  while (pos < content.size()) {
    std::size_t lf = content.find('\n', pos);
    std::size_t end = lf == std::string_view::npos ? content.size() : lf;
    std::string_view line = content.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) capa.lines_.emplace_back(line);
    pos = end + 1;
  }
  return capa;
}

bool Capabilities::Has(std::string_view name) const {
  return std::any_of(lines_.begin(), lines_.end(), [&](const std::string& line) {
    return EqualsIgnoreCase(Keyword(line), name);
  });
}

void Capabilities::Rewrite(const CapaPolicy& policy) {
  std::vector<std::string> kept;
  for (auto& line : lines_) {
    std::string_view keyword = Keyword(line);
    if (EqualsIgnoreCase(keyword, "STLS")) continue;
    if (policy.hide_logins && EqualsIgnoreCase(keyword, "USER")) continue;
    if (EqualsIgnoreCase(keyword, "SASL")) {
      if (policy.hide_logins) continue;
      std::string rebuilt(keyword);
      for (const auto& mechanism : Words(std::string_view(line).substr(keyword.size()))) {
        if (CanRelayMechanism(mechanism)) rebuilt += " " + mechanism;
      }
      if (rebuilt.size() == keyword.size()) continue;  // nothing left to offer
      kept.push_back(std::move(rebuilt));
      continue;
    }
    kept.push_back(std::move(line));
  }
  if (policy.offer_stls) kept.emplace_back("STLS");
  lines_ = std::move(kept);
}

std::string Capabilities::Serialize() const {
  std::string out;
  for (const auto& line : lines_) {
    out += line;
    out += "\r\n";
  }
  return out;
}

}  // namespace popgate::pop3
