#include "mail/headers.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "text/one_line.h"

namespace popgate::mail {
namespace {

// RFC 5322 §2.1.1: lines SHOULD be no longer than 78 characters, excluding the CRLF.
constexpr std::size_t kFoldColumn = 78;

bool IsWsp(char c) { return c == ' ' || c == '\t'; }

char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return AsciiLower(x) == AsciiLower(y);
         });
}

// Whether `field` is named `name`. Lines that are not fields have an empty name, and an
// empty `name` matches nothing.
bool Named(const HeaderField& field, std::string_view name) {
  return !name.empty() && EqualsIgnoreCase(field.name(), name);
}

void CheckValue(std::string_view value) {
  if (text::HasLineBreakOrNul(value)) {
    throw std::invalid_argument("header value contains CR, LF or NUL");
  }
}

std::string_view TrimWsp(std::string_view text) {
  while (!text.empty() && IsWsp(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsWsp(text.back())) text.remove_suffix(1);
  return text;
}

}  // namespace

std::string HeaderField::value() const {
  if (colon_ == std::string::npos) return {};
  std::string_view rest = raw().substr(colon_ + 1);
  std::string out;
  out.reserve(rest.size());
  for (std::size_t i = 0; i < rest.size(); ++i) {
    char c = rest[i];
    if (c == '\n') continue;
    if (c == '\r' && i + 1 < rest.size() && rest[i + 1] == '\n') continue;
    out.push_back(c);
  }
  std::string_view trimmed = TrimWsp(out);
  return std::string(trimmed);
}

bool IsValidFieldName(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 33 && u <= 126 && c != ':';
  });
}

void HeaderField::Append(std::string_view more) {
  if (!owned_) {
    text_ = view_;
    owned_ = true;
  }
  text_.append(more);
}

Headers::Headers(std::string_view block) {
  SharedBytes copy(std::string{block});
  std::string_view view = copy.view();
  *this = Headers(std::move(copy), view);
}

Headers::Headers(SharedBytes owner, std::string_view block) : block_(std::move(owner)) {
  fields_.reserve(block.size() / 48 + 4);  // a guess from typical field lengths: no scan
  std::size_t first_lf = block.find('\n');
  if (first_lf != std::string_view::npos && (first_lf == 0 || block[first_lf - 1] != '\r')) {
    eol_ = "\n";
  }
  std::size_t pos = 0;
  while (pos < block.size()) {
    std::size_t lf = block.find('\n', pos);
    std::size_t next = lf == std::string_view::npos ? block.size() : lf + 1;
    std::string_view line = block.substr(pos, next - pos);
    pos = next;
    // A line starting with whitespace continues the field before it (RFC 5322 §2.2.3).
    if (IsWsp(line.front()) && !fields_.empty()) {
      // Parsed lines are contiguous: the field's view grows over it.
      std::string_view& view = fields_.back().view_;
      view = std::string_view(view.data(), view.size() + line.size());
      continue;
    }
    // The colon counts only before the first CR (or the LF that ends the line); one
    // search for each, not a scan of both at every byte.
    std::string_view first = line.substr(0, line.find('\r'));
    if (first.ends_with('\n')) first.remove_suffix(1);
    std::size_t colon = IsWsp(line.front()) ? std::string_view::npos : first.find(':');
    std::size_t name_size = 0;
    if (colon != std::string_view::npos) {
      // RFC 5322 §4.5 (obsolete syntax): whitespace may precede the colon.
      name_size = colon;
      while (name_size > 0 && IsWsp(first[name_size - 1])) --name_size;
    }
    fields_.push_back(HeaderField(line, name_size, colon));
  }
}

std::optional<std::string> Headers::Get(std::string_view name) const {
  auto it = std::find_if(fields_.begin(), fields_.end(),
                         [&](const HeaderField& field) { return Named(field, name); });
  if (it == fields_.end()) return std::nullopt;
  return it->value();
}

std::vector<std::string> Headers::GetAll(std::string_view name) const {
  std::vector<std::string> values;
  for (const HeaderField& field : fields_) {
    if (Named(field, name)) values.push_back(field.value());
  }
  return values;
}

bool Headers::Has(std::string_view name) const {
  return std::any_of(fields_.begin(), fields_.end(),
                     [&](const HeaderField& field) { return Named(field, name); });
}

HeaderField Headers::MakeField(std::string_view name, std::string_view value) const {
  if (!IsValidFieldName(name)) {
    CheckValue(name);  // the more specific message for CR, LF, NUL
    throw std::invalid_argument("invalid header name");
  }
  CheckValue(value);
  value = TrimWsp(value);

  // Fold (RFC 5322 §2.2.3): a line break goes only before whitespace, so unfolding gives
  // back the value. Each chunk is a run of whitespace and the word after it; a chunk
  // that doesn't fit on the current line starts a continuation line.
  std::string raw;
  raw.reserve(name.size() + value.size() + 8);
  raw.append(name);
  raw.push_back(':');
  std::size_t column = raw.size();
  std::size_t pos = 0;
  bool first = true;
  while (pos < value.size()) {
    std::size_t word = pos;
    while (word < value.size() && IsWsp(value[word])) ++word;
    std::size_t end = word;
    while (end < value.size() && !IsWsp(value[end])) ++end;
    std::string_view chunk = value.substr(pos, end - pos);
    if (first) {
      raw.push_back(' ');
      ++column;
      first = false;
    } else if (column + chunk.size() > kFoldColumn) {
      raw.append(eol_);
      column = 0;
    }
    raw.append(chunk);
    column += chunk.size();
    pos = end;
  }
  raw.append(eol_);
  return HeaderField(std::move(raw), name.size(), name.size());
}

void Headers::Add(std::string_view name, std::string_view value) {
  HeaderField field = MakeField(name, value);
  if (!fields_.empty() && fields_.back().raw() == "\r") {
    // The block ends in a lone CR: its blank line, cut short. A line break after it
    // would complete that blank line and put the new field in the body, so the new
    // field goes before it.
    fields_.insert(fields_.end() - 1, std::move(field));
    Touch();
    return;
  }
  // A block that ended without a line break (a message without a blank line) gets one
  // before the new field, or the two would run together.
  if (!fields_.empty() && fields_.back().raw().back() != '\n') fields_.back().Append(eol_);
  fields_.push_back(std::move(field));
  Touch();
}

void Headers::Set(std::string_view name, std::string_view value) {
  auto it = std::find_if(fields_.begin(), fields_.end(),
                         [&](const HeaderField& field) { return Named(field, name); });
  if (it == fields_.end()) {
    Add(name, value);
    return;
  }
  *it = MakeField(name, value);
  fields_.erase(std::remove_if(it + 1, fields_.end(),
                               [&](const HeaderField& field) { return Named(field, name); }),
                fields_.end());
  Touch();
}

std::size_t Headers::Remove(std::string_view name) {
  std::size_t removed =
      std::erase_if(fields_, [&](const HeaderField& field) { return Named(field, name); });
  if (removed > 0) Touch();
  return removed;
}

void Headers::AppendTo(std::string& out) const {
  for (const HeaderField& field : fields_) out.append(field.raw());
}

std::string Headers::Serialize() const {
  std::string out;
  out.reserve(byte_size());
  AppendTo(out);
  return out;
}

std::size_t Headers::byte_size() const {
  std::size_t size = 0;
  for (const HeaderField& field : fields_) size += field.raw().size();
  return size;
}

}  // namespace popgate::mail
