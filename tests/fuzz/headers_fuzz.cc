// libFuzzer target for the header view (mail::Headers, mail::Message): the input is a
// message as the multi-line decoder hands it over (or as a plugin's Replace gives it),
// parsed, read, edited by a sequence of Add/Set/Remove derived from the input, and
// serialised again.
//
// Invariants (mail/headers.h, mail/message.h):
// - untouched, a message serialises to its input byte for byte, and the fields' bytes
//   are the header block cut into pieces: nothing lost, nothing added;
// - the split is at the first empty line, and only there;
// - an edit keeps every other field's bytes and their order (a reference model of the
//   field list, updated per edit, must equal the view's);
// - a field made by Add/Set with valid input: its name as given, its value unfolding
//   to the trimmed input, lines ending in the block's own line ending, no other CR or
//   LF, folded only before whitespace, no line over 78 columns but a single long word;
// - invalid names or values throw std::invalid_argument and change nothing;
// - the edited message parses back to the same fields with the header block ending
//   where it did (no added field ever lands in the body); copies taken before an edit
//   keep the original bytes.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "mail/headers.h"
#include "mail/message.h"
#include "pop3/multiline.h"

namespace {

using popgate::mail::Headers;
using popgate::mail::Message;
using popgate::pop3::HeaderSplit;
using popgate::pop3::SplitHeaders;

constexpr std::size_t kFoldColumn = 78;  // RFC 5322 §2.1.1
constexpr std::size_t kLookups = 64;     // fields whose lookup is checked

bool IsWsp(char c) { return c == ' ' || c == '\t'; }

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool SameName(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

// RFC 5322 §2.2 field name: printable ASCII but ':', not empty.
bool ValidName(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u < 33 || u > 126 || c == ':') return false;
  }
  return true;
}

bool HasCrLfNul(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsWsp(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsWsp(s.back())) s.remove_suffix(1);
  return s;
}

// The first empty line ("\n" or "\r\n" at a line start), by a line-by-line scan.
HeaderSplit ReferenceSplit(std::string_view message) {
  std::size_t pos = 0;
  while (pos < message.size()) {
    std::size_t lf = message.find('\n', pos);
    std::string_view line =
        message.substr(pos, lf == std::string_view::npos ? std::string_view::npos : lf + 1 - pos);
    if (line == "\n" || line == "\r\n") return {pos, line.size()};
    if (lf == std::string_view::npos) break;
    pos = lf + 1;
  }
  return {message.size(), 0};
}

// The line ending new fields get: the block's own, CRLF unless its first line ends in LF.
std::string_view ExpectedEol(std::string_view block) {
  std::size_t lf = block.find('\n');
  if (lf != std::string_view::npos && (lf == 0 || block[lf - 1] != '\r')) return "\n";
  return "\r\n";
}

std::vector<std::string> Raws(const Headers& headers) {
  std::vector<std::string> raws;
  for (const auto& field : headers) raws.emplace_back(field.raw());
  return raws;
}

std::string Join(const std::vector<std::string>& raws) {
  std::string out;
  for (const auto& raw : raws) out += raw;
  return out;
}

// The name a parsed field must report: up to the colon of its first line, whitespace
// before the colon dropped; empty for a line without colon or a leading continuation.
std::string ExpectedName(std::string_view raw) {
  if (IsWsp(raw.front())) return {};
  std::string_view first = raw.substr(0, raw.find_first_of("\r\n"));
  std::size_t colon = first.find(':');
  if (colon == std::string_view::npos) return {};
  std::string_view name = first.substr(0, colon);
  while (!name.empty() && IsWsp(name.back())) name.remove_suffix(1);
  return std::string(name);
}

// The fields as parsed: the block cut at the line starts that are not continuations.
void CheckParsed(const Headers& headers, std::string_view block) {
  FUZZ_CHECK(headers.Serialize() == block);
  FUZZ_CHECK(headers.byte_size() == block.size());
  FUZZ_CHECK(!headers.modified());
  FUZZ_CHECK(headers.version() == 0);
  std::size_t pos = 0;
  std::size_t index = 0;
  for (const auto& field : headers) {
    std::string_view raw = field.raw();
    FUZZ_CHECK(!raw.empty());
    FUZZ_CHECK(block.substr(pos, raw.size()) == raw);
    // A field is its first line and the continuation lines after it.
    for (std::size_t lf = raw.find('\n'); lf != std::string_view::npos;
         lf = raw.find('\n', lf + 1)) {
      if (lf + 1 < raw.size()) FUZZ_CHECK(IsWsp(raw[lf + 1]));
    }
    // Only the last field may lack a line end; a field stops before a line that
    // doesn't start with whitespace, and only the first may start with whitespace.
    if (index + 1 < headers.size()) FUZZ_CHECK(raw.back() == '\n');
    if (index > 0) FUZZ_CHECK(!IsWsp(raw.front()));
    pos += raw.size();
    if (pos < block.size()) FUZZ_CHECK(!IsWsp(block[pos]) || raw.back() != '\n');
    FUZZ_CHECK(field.name() == ExpectedName(raw));

    // Lookups find every named field, and the first of its name first (for the first
    // fields only: each lookup is a scan of all of them).
    if (!field.name().empty() && index < kLookups) {
      FUZZ_CHECK(headers.Has(field.name()));
      auto first = std::find_if(headers.begin(), headers.end(),
                                [&](const auto& f) { return SameName(f.name(), field.name()); });
      FUZZ_CHECK(headers.Get(field.name()) == first->value());
    }
    std::string value = field.value();
    FUZZ_CHECK(value == Trim(value));
    FUZZ_CHECK(value.find('\n') == std::string::npos);
    ++index;
  }
  FUZZ_CHECK(pos == block.size());
  FUZZ_CHECK(!headers.Has(""));
  FUZZ_CHECK(!headers.Get("").has_value());
}

// A field made by Add/Set from a valid name and value.
void CheckMadeField(std::string_view raw, std::string_view name, std::string_view value,
                    std::string_view eol) {
  const std::string_view trimmed = Trim(value);
  FUZZ_CHECK(raw.starts_with(name));
  FUZZ_CHECK(raw.substr(name.size(), 1) == ":");
  FUZZ_CHECK(raw.ends_with(eol));
  // Lines end in `eol` and nowhere else; no CR or LF inside a line.
  std::size_t pos = 0;
  bool first = true;
  while (pos < raw.size()) {
    std::size_t end = raw.find(eol, pos);
    FUZZ_CHECK(end != std::string_view::npos);
    std::string_view line = raw.substr(pos, end - pos);
    FUZZ_CHECK(!HasCrLfNul(line));
    if (!first) {
      // Folded only before whitespace, so unfolding gives the value back.
      FUZZ_CHECK(!line.empty() && IsWsp(line.front()));
    }
    if (line.size() > kFoldColumn) {
      // Only a single word too long for a line makes a line too long.
      std::string_view words =
          first ? line.substr(std::min(line.size(), name.size() + 2)) : Trim(line);
      FUZZ_CHECK(std::none_of(words.begin(), words.end(), IsWsp));
    }
    first = false;
    pos = end + eol.size();
  }
  // The value unfolds to the input without its surrounding whitespace.
  std::string unfolded;
  std::string_view rest = raw.substr(name.size() + 1);
  for (std::size_t i = 0; i < rest.size(); ++i) {
    if (rest.substr(i, eol.size()) == eol) {
      i += eol.size() - 1;
      continue;
    }
    unfolded += rest[i];
  }
  FUZZ_CHECK(Trim(unfolded) == trimmed);
}

// The header view and the message agree after an edit, and parse back to themselves.
void CheckConsistent(const Message& message, const Headers& headers,
                     const std::vector<std::string>& model, std::string_view separator,
                     std::string_view body, std::string_view original) {
  FUZZ_CHECK(Raws(headers) == model);
  const std::string block = Join(model);
  FUZZ_CHECK(headers.Serialize() == block);
  FUZZ_CHECK(headers.byte_size() == block.size());
  const std::string expected = block + std::string(separator) + std::string(body);
  FUZZ_CHECK(message.bytes() == expected);
  FUZZ_CHECK(message.size() == expected.size());
  FUZZ_CHECK(message.original() == original);
  FUZZ_CHECK(message.body() == body);
  Message::Parts parts = message.parts();
  FUZZ_CHECK(parts.headers == block);
  FUZZ_CHECK(parts.separator == separator);
  FUZZ_CHECK(parts.body == body);
  // A piece followed by a non-empty one ends at a line boundary (message.h).
  if (!parts.headers.empty() && !(parts.separator.empty() && parts.body.empty())) {
    FUZZ_CHECK(parts.headers.back() == '\n');
  }

  // What goes to the client parses to the same header block and fields.
  Message again(std::string(message.bytes()));
  FUZZ_CHECK(again.body() == body);
  const Headers& reparsed = again.headers();
  FUZZ_CHECK(reparsed.Serialize() == block);
  FUZZ_CHECK(reparsed.size() == headers.size());
  auto it = reparsed.begin();
  for (const auto& field : headers) {
    FUZZ_CHECK(it->name() == field.name());
    FUZZ_CHECK(it->value() == field.value());
    ++it;
  }
}

// Names and values for edits: mostly the message's own names (in place edits), some
// fixed ones, some invalid; values from the input, sanitised or not.
struct EditSource {
  std::string_view data;
  popgate::fuzz::Rng rng;
  std::vector<std::string> names;

  std::string Name() {
    static const std::string kFixed[] = {
        "Subject", "X-Spam-Flag", "x-spam-status",        "Received", "X-Popgate", "",  "Bad Name",
        "A:B",     "Tab\tName",   std::string("N\0L", 3), "\xc3\xa9", "X-\r\n",    "To"};
    std::uint64_t r = rng.Next();
    if (!names.empty() && r % 3 != 0) {
      std::string name = names[(r >> 8) % names.size()];
      if ((r >> 20) % 4 == 0) {
        for (char& c : name) c = c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : Lower(c);
      }
      return name;
    }
    return kFixed[(r >> 8) % std::size(kFixed)];
  }

  std::string Value() {
    static const std::string kFixed[] = {
        "",
        "YES",
        "  padded value\t ",
        "Yes, score=1000.0 required=5.0 tests=GTUBE,NO_RECEIVED,NO_RELAYS autolearn=disabled "
        "version=4.0.1",
        std::string(120, 'w'),
        "a " + std::string(90, 'b') + " c\t\td " + std::string(10, 'e'),
        "\xc3\xa9t\xc3\xa9 8-bit",
        "bad\r\nInjected: yes",
        std::string("nul\0byte", 8),
        "bare\rcr"};
    std::uint64_t r = rng.Next();
    if (data.empty() || r % 2 == 0) return kFixed[(r >> 8) % std::size(kFixed)];
    std::size_t start = (r >> 8) % data.size();
    std::size_t size = (r >> 32) % 200;
    std::string value(data.substr(start, size));
    if ((r >> 4) % 3 != 0) {
      for (char& c : value) {
        if (c == '\r' || c == '\n' || c == '\0') c = ' ';
      }
    }
    return value;
  }
};

void CheckEdits(std::string_view data) {
  Message message{std::string(data)};
  const HeaderSplit split = SplitHeaders(data);
  const std::string_view block = data.substr(0, split.header_size);
  const std::string_view separator = data.substr(split.header_size, split.separator_size);
  const std::string_view body = data.substr(split.header_size + split.separator_size);
  const std::string_view eol = ExpectedEol(block);

  Message before = message;  // a copy before parsing
  Headers& headers = message.headers();
  CheckParsed(headers, block);
  FUZZ_CHECK(message.bytes() == data);                              // parsing alone changes nothing
  FUZZ_CHECK(message.bytes().data() == message.original().data());  // not even a copy
  FUZZ_CHECK(!message.modified());
  Message parsed = message;  // a copy with the parsed view

  EditSource source{data, popgate::fuzz::Rng(data, 0x2545f4914f6cdd1dULL), {}};
  for (const auto& field : headers) {
    if (!field.name().empty()) source.names.emplace_back(field.name());
  }
  std::vector<std::string> model = Raws(headers);
  bool edited = false;
  const std::size_t edits = 1 + source.rng.Next() % 6;
  for (std::size_t i = 0; i < edits; ++i) {
    const std::uint64_t op = source.rng.Next() % 3;
    const std::string name = source.Name();
    const std::uint64_t version = headers.version();
    if (op == 2) {
      std::size_t expected =
          static_cast<std::size_t>(std::erase_if(model, [&](const std::string& raw) {
            return !name.empty() && SameName(ExpectedName(raw), name);
          }));
      FUZZ_CHECK(headers.Remove(name) == expected);
      FUZZ_CHECK((headers.version() != version) == (expected > 0));
      edited = edited || expected > 0;
      FUZZ_CHECK(!headers.Has(name));
    } else {
      const std::string value = source.Value();
      const bool valid = ValidName(name) && !HasCrLfNul(value);
      const std::vector<std::string> kept = Raws(headers);
      try {
        if (op == 0) {
          headers.Add(name, value);
        } else {
          headers.Set(name, value);
        }
        FUZZ_CHECK(valid);
      } catch (const std::invalid_argument&) {
        FUZZ_CHECK(!valid);
        FUZZ_CHECK(Raws(headers) == kept);
        FUZZ_CHECK(headers.version() == version);
        CheckConsistent(message, headers, model, separator, body, data);
        continue;
      }
      FUZZ_CHECK(headers.version() != version);
      edited = true;
      auto first = std::find_if(model.begin(), model.end(), [&](const std::string& raw) {
        return SameName(ExpectedName(raw), name);
      });
      std::size_t at = 0;
      if (op == 1 && first != model.end()) {
        at = static_cast<std::size_t>(first - model.begin());
        std::erase_if(model, [&](const std::string& raw) {
          return &raw != &model[at] && SameName(ExpectedName(raw), name);
        });
        FUZZ_CHECK(headers.size() == model.size());
        model[at] = std::string((headers.begin() + static_cast<std::ptrdiff_t>(at))->raw());
        FUZZ_CHECK(headers.GetAll(name).size() == 1);
      } else if (!model.empty() && model.back() == "\r") {
        // Before a lone CR at the end (a blank line cut short), which stays last.
        at = model.size() - 1;
        FUZZ_CHECK(headers.size() == model.size() + 1);
        model.emplace(model.end() - 1, (headers.begin() + static_cast<std::ptrdiff_t>(at))->raw());
        FUZZ_CHECK(headers.GetAll(name).back() == Trim(value));
      } else {
        // Appended; a last field without a line end gets one first.
        if (!model.empty() && model.back().back() != '\n') model.back() += eol;
        at = model.size();
        FUZZ_CHECK(headers.size() == model.size() + 1);
        model.emplace_back((headers.end() - 1)->raw());
        FUZZ_CHECK(headers.GetAll(name).back() == Trim(value));
      }
      const auto& made = *(headers.begin() + static_cast<std::ptrdiff_t>(at));
      FUZZ_CHECK(made.name() == name);
      CheckMadeField(made.raw(), name, value, eol);
      FUZZ_CHECK(made.value() == Trim(value));
      if (op == 1) FUZZ_CHECK(headers.Get(name) == std::string(Trim(value)));
    }
    FUZZ_CHECK(headers.modified() == edited);
    FUZZ_CHECK(message.modified() == edited);
    CheckConsistent(message, headers, model, separator, body, data);
  }

  // Copies made before the edits still hold the original.
  FUZZ_CHECK(before.bytes() == data);
  FUZZ_CHECK(before.headers().Serialize() == block);
  FUZZ_CHECK(parsed.bytes() == data);
  FUZZ_CHECK(!parsed.modified());

  // Replace drops the edits; the view then reads the replacement.
  std::string replacement(body);
  replacement += "\r\n";
  replacement.append(block);
  message.Replace(replacement);
  FUZZ_CHECK(message.bytes() == replacement);
  FUZZ_CHECK(message.original() == data);
  FUZZ_CHECK(message.modified());
  const HeaderSplit replaced = SplitHeaders(replacement);
  FUZZ_CHECK(message.headers().Serialize() == replacement.substr(0, replaced.header_size));
  FUZZ_CHECK(message.bytes() == replacement);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view data(reinterpret_cast<const char*>(bytes), size);

  const HeaderSplit split = SplitHeaders(data);
  const HeaderSplit expected = ReferenceSplit(data);
  FUZZ_CHECK(split.header_size == expected.header_size);
  FUZZ_CHECK(split.separator_size == expected.separator_size);

  // Any block, also one SplitHeaders would never hand over (with empty lines inside).
  Headers whole(data);
  CheckParsed(whole, data);

  CheckEdits(data);
  return 0;
}
