// spamd_probe: asks spamd about the message on standard input and prints the
// result as one JSON object. A test and diagnostics tool for the spamd client.
//
//   spamd_probe --address 127.0.0.1:783 < message.eml
//   spamd_probe --address /run/spamd.sock --ping
//
// Output on success:
//   {"ok":true,"is_spam":true,"score":1000,"threshold":5,"score_text":"1000.0",
//    "threshold_text":"5.0","headers":[{"name":"X-Spam-Flag","value":"YES",
//    "raw":"X-Spam-Flag: YES"},...],"elapsed_ms":312}
// and on failure:
//   {"ok":false,"error":"connection_refused","detail":"...","spamd_code":0,"elapsed_ms":0}
// Strings are JSON with bytes >= 0x80 written as \u00XX (Latin-1), so any bytes print.
//
// Exit status: 0 checked (spam or not), 2 usage or unreadable input, 3 too_large,
// 4 bad_address, 5 connection_refused, 6 connect, 7 timeout, 8 io, 9 protocol,
// 10 spamd (an error answer).

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>

#include "spam_tag/spamd_client.h"

namespace {

using popgate::spamd::Error;

int ExitCode(Error error) {
  switch (error) {
    case Error::kNone:
      return 0;
    case Error::kTooLarge:
      return 3;
    case Error::kBadAddress:
      return 4;
    case Error::kConnectionRefused:
      return 5;
    case Error::kConnect:
      return 6;
    case Error::kTimeout:
      return 7;
    case Error::kIo:
      return 8;
    case Error::kProtocol:
      return 9;
    case Error::kSpamd:
      return 10;
  }
  return 8;
}

std::string Json(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c >= 0x7f) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += ch;
    }
  }
  out += '"';
  return out;
}

std::string Number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "null";
  return std::string(buf, end);
}

bool ParseSize(const char* text, std::size_t& out) {
  std::string_view s(text);
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "spamd_probe: %s\n"
               "usage: spamd_probe [--address HOST:PORT|/socket] [--timeout-ms N]\n"
               "                   [--connect-timeout-ms N] [--user NAME] [--max-size BYTES]\n"
               "                   [--ping]   (message on standard input)\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  popgate::spamd::ClientOptions options;
  if (const char* env = std::getenv("SPAMD_ADDRESS")) options.address = env;
  bool ping = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&](std::size_t& out) {
      if (i + 1 >= argc || !ParseSize(argv[i + 1], out)) return false;
      ++i;
      return true;
    };
    std::size_t n = 0;
    if (arg == "--address" && i + 1 < argc) {
      options.address = argv[++i];
    } else if (arg == "--user" && i + 1 < argc) {
      options.user = argv[++i];
    } else if (arg == "--timeout-ms" && value(n)) {
      options.timeout = std::chrono::milliseconds(n);
    } else if (arg == "--connect-timeout-ms" && value(n)) {
      options.connect_timeout = std::chrono::milliseconds(n);
    } else if (arg == "--max-size" && value(n)) {
      options.max_message_size = n;
    } else if (arg == "--ping") {
      ping = true;
    } else if (arg == "--help" || arg == "-h") {
      Usage("asks spamd about a message");
      return 0;
    } else {
      return Usage(("bad argument: " + std::string(arg)).c_str());
    }
  }

  std::string message;
  if (!ping) {
    std::ios::sync_with_stdio(false);
    message.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    if (std::cin.bad()) return Usage("cannot read standard input");
  }

  auto start = std::chrono::steady_clock::now();
  popgate::spamd::Result r =
      ping ? popgate::spamd::Ping(options) : popgate::spamd::Check(options, message);
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - start)
                     .count();

  std::string out;
  if (r.ok()) {
    out = "{\"ok\":true";
    if (!ping) {
      out += ",\"is_spam\":";
      out += r.is_spam ? "true" : "false";
      out += ",\"score\":" + Number(r.score);
      out += ",\"threshold\":" + Number(r.threshold);
      out += ",\"score_text\":" + Json(r.score_text);
      out += ",\"threshold_text\":" + Json(r.threshold_text);
      out += ",\"headers\":[";
      for (std::size_t i = 0; i < r.headers.size(); ++i) {
        const auto& h = r.headers[i];
        if (i > 0) out += ',';
        out += "{\"name\":" + Json(h.name) + ",\"value\":" + Json(h.value) +
               ",\"raw\":" + Json(h.raw) + "}";
      }
      out += "]";
    }
  } else {
    out = "{\"ok\":false,\"error\":" + Json(popgate::spamd::ErrorName(r.error));
    out += ",\"detail\":" + Json(r.detail);
    out += ",\"spamd_code\":" + std::to_string(r.spamd_code);
  }
  out += ",\"elapsed_ms\":" + std::to_string(elapsed) + "}\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  return ExitCode(r.error);
}
