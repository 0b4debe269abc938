#include "spam_tag/spamd_client.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace popgate::spamd {
namespace {

using namespace std::chrono_literals;
using State = ResponseParser::State;

// ---------------------------------------------------------------- canned answers
// Captured from Debian's spamd 4.0.1 (HEADERS SPAMC/1.5), report_safe 0 and
// `add_header all Score _SCORE_`, for the GTUBE message: verbatim bytes.
constexpr std::string_view kGtubeReportSafe0 =
    "SPAMD/1.1 0 EX_OK\r\nContent-length: 675\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n"
    "X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm\r\n"
    "X-Spam-Flag: YES\r\n"
    "X-Spam-Level: **************************************************\r\n"
    "X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE,NO_RECEIVED,\r\n"
    "\tNO_RELAYS autolearn=disabled version=4.0.1\r\n"
    "X-Spam-Report: \r\n"
    "\t* -0.0 NO_RECEIVED Informational: message has no Received headers\r\n"
    "\t* -0.0 NO_RELAYS Informational: message was not relayed via SMTP\r\n"
    "\t* 1000 GTUBE BODY: Generic Test for Unsolicited Bulk Email\r\n"
    "X-Spam-Score: 1000.0\r\n"
    "From: Sender <sender@example.org>\r\n"
    "To: Alice <alice@example.org>\r\n"
    "Subject: Test spam mail (GTUBE)\r\n"
    "Date: Tue, 14 Nov 2023 10:00:00 +0000\r\n"
    "Message-ID: <gtube-1@popgate.test>\r\n"
    "\r\n";

// The same spamd with its defaults (report_safe 1): the spam's headers in the middle.
constexpr std::string_view kGtubeBody =
    "Received: from localhost by vm\r\n"
    "\twith SpamAssassin (version 4.0.1);\r\n"
    "\tSun, 22 Nov 2026 02:24:46 +0000\r\n"
    "From: Sender <sender@example.org>\r\n"
    "Subject: Test spam mail (GTUBE)\r\n"
    "X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm\r\n"
    "X-Spam-Flag: YES\r\n"
    "X-Spam-Level: **************************************************\r\n"
    "X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE,NO_RECEIVED,\r\n"
    "\tNO_RELAYS autolearn=disabled version=4.0.1\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"----------=_6B02526E.998E03D1\"\r\n"
    "\r\n";

constexpr std::string_view kHamBody =
    "X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm\r\n"
    "X-Spam-Level: \r\n"
    "X-Spam-Status: No, score=-0.0 required=5.0 tests=NO_RECEIVED,NO_RELAYS\r\n"
    "\tautolearn=disabled version=4.0.1\r\n"
    "From: Sender <sender@example.org>\r\n"
    "Subject: Lunch on Thursday\r\n"
    "Message-ID: <ham-1@popgate.test>\r\n"
    "\r\n";

// spamd keeps the message's own line endings: a message with LF gets LF headers.
constexpr std::string_view kLfBody =
    "Received: from localhost by vm\n"
    "\twith SpamAssassin (version 4.0.1);\n"
    "\tSun, 22 Nov 2026 02:23:32 +0000\n"
    "X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm\n"
    "X-Spam-Flag: YES\n"
    "X-Spam-Level: *******\n"
    "X-Spam-Status: Yes, score=7.4 required=5.0 tests=EMPTY_MESSAGE,MISSING_DATE,\n"
    "\tMISSING_FROM,MISSING_HEADERS autolearn=disabled\n"
    "\tversion=4.0.1\n"
    "MIME-Version: 1.0\n"
    "\n";

std::string Answer(std::string_view spam_line, std::string_view body) {
  return "SPAMD/1.1 0 EX_OK\r\nContent-length: " + std::to_string(body.size()) +
         "\r\nSpam: " + std::string(spam_line) + "\r\n\r\n" + std::string(body);
}

constexpr std::string_view kMessage =
    "From: Sender <sender@example.org>\r\n"
    "Subject: Lunch\r\n"
    "\r\n"
    "Hi.\r\n";

// ---------------------------------------------------------------- the parser

TEST(SpamdParserTest, SpamWithReportSafe0) {
  Result r = ParseHeadersResponse(kGtubeReportSafe0);
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_TRUE(r.is_spam);
  EXPECT_DOUBLE_EQ(r.score, 1000.0);
  EXPECT_DOUBLE_EQ(r.threshold, 5.0);
  EXPECT_EQ(r.score_text, "1000.0");
  EXPECT_EQ(r.threshold_text, "5.0");
  ASSERT_EQ(r.headers.size(), 6u);
  EXPECT_EQ(r.headers[0].name, "X-Spam-Checker-Version");
  EXPECT_EQ(r.headers[0].value, "SpamAssassin 4.0.1 (2024-03-25) on vm");
  EXPECT_EQ(r.headers[1].name, "X-Spam-Flag");
  EXPECT_EQ(r.headers[1].value, "YES");
  EXPECT_EQ(r.headers[1].raw, "X-Spam-Flag: YES");
  EXPECT_EQ(r.headers[2].name, "X-Spam-Level");
  EXPECT_EQ(r.headers[2].value, std::string(50, '*'));
  EXPECT_EQ(r.headers[3].name, "X-Spam-Status");
  EXPECT_EQ(r.headers[3].value,
            "Yes, score=1000.0 required=5.0 tests=GTUBE,NO_RECEIVED,"
            "\tNO_RELAYS autolearn=disabled version=4.0.1");
  EXPECT_EQ(r.headers[3].raw,
            "X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE,NO_RECEIVED,\r\n"
            "\tNO_RELAYS autolearn=disabled version=4.0.1");
  EXPECT_EQ(r.headers[4].name, "X-Spam-Report");
  EXPECT_TRUE(r.headers[4].value.starts_with("* -0.0 NO_RECEIVED Informational"));
  EXPECT_TRUE(r.headers[4].value.ends_with("GTUBE BODY: Generic Test for Unsolicited Bulk Email"));
  EXPECT_EQ(r.headers[4].value.find('\n'), std::string::npos);
  EXPECT_EQ(r.headers[5].name, "X-Spam-Score");
  EXPECT_EQ(r.headers[5].value, "1000.0");
  ASSERT_NE(r.Find("x-spam-score"), nullptr);
  EXPECT_EQ(r.Find("X-SPAM-SCORE")->value, "1000.0");
  EXPECT_EQ(r.Find("From"), nullptr);  // only SpamAssassin's fields
}

TEST(SpamdParserTest, SpamWithDefaultReportSafe) {
  Result r = ParseHeadersResponse(Answer("True ; 1000.0 / 5.0", kGtubeBody));
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_TRUE(r.is_spam);
  ASSERT_EQ(r.headers.size(), 4u);
  EXPECT_EQ(r.headers[0].name, "X-Spam-Checker-Version");
  EXPECT_EQ(r.headers[3].name, "X-Spam-Status");
  EXPECT_EQ(r.Find("X-Spam-Flag")->value, "YES");
  EXPECT_EQ(r.Find("X-Spam-Score"), nullptr);  // not in SpamAssassin's defaults
}

TEST(SpamdParserTest, Ham) {
  Result r = ParseHeadersResponse(Answer("False ; -0.0 / 5.0", kHamBody));
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_FALSE(r.is_spam);
  EXPECT_EQ(r.score_text, "-0.0");
  EXPECT_DOUBLE_EQ(r.score, 0.0);
  ASSERT_EQ(r.headers.size(), 3u);
  EXPECT_EQ(r.Find("X-Spam-Flag"), nullptr);
  EXPECT_EQ(r.Find("X-Spam-Level")->value, "");
  EXPECT_EQ(r.Find("X-Spam-Level")->raw, "X-Spam-Level: ");
  EXPECT_EQ(r.Find("X-Spam-Status")->value,
            "No, score=-0.0 required=5.0 tests=NO_RECEIVED,NO_RELAYS\tautolearn=disabled "
            "version=4.0.1");
}

TEST(SpamdParserTest, NegativeAndFractionalScores) {
  Result r = ParseHeadersResponse(Answer("False ; -1.9 / 6.5", kHamBody));
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_DOUBLE_EQ(r.score, -1.9);
  EXPECT_DOUBLE_EQ(r.threshold, 6.5);
  r = ParseHeadersResponse(Answer("True;7/5", kHamBody));  // spacing is not required
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_TRUE(r.is_spam);
  EXPECT_DOUBLE_EQ(r.score, 7);
}

TEST(SpamdParserTest, LfLineEndingsAndThreeLineStatus) {
  Result r = ParseHeadersResponse(Answer("True ; 7.4 / 5.0", kLfBody));
  ASSERT_TRUE(r.ok()) << r.detail;
  ASSERT_NE(r.Find("X-Spam-Status"), nullptr);
  EXPECT_EQ(r.Find("X-Spam-Status")->value,
            "Yes, score=7.4 required=5.0 tests=EMPTY_MESSAGE,MISSING_DATE,"
            "\tMISSING_FROM,MISSING_HEADERS autolearn=disabled\tversion=4.0.1");
  // raw always uses CRLF.
  EXPECT_EQ(r.Find("X-Spam-Status")->raw,
            "X-Spam-Status: Yes, score=7.4 required=5.0 tests=EMPTY_MESSAGE,MISSING_DATE,\r\n"
            "\tMISSING_FROM,MISSING_HEADERS autolearn=disabled\r\n"
            "\tversion=4.0.1");
  EXPECT_EQ(r.Find("X-Spam-Level")->value, "*******");
}

TEST(SpamdParserTest, LfInTheAnswerHeaderToo) {
  std::string body(kHamBody);
  std::string answer = "SPAMD/1.1 0 EX_OK\nContent-length: " + std::to_string(body.size()) +
                       "\nSpam: False ; 0.1 / 5.0\n\n" + body;
  Result r = ParseHeadersResponse(answer);
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_EQ(r.headers.size(), 3u);
}

TEST(SpamdParserTest, FieldNamesAndOrderOfTheAnswerHeaderDoNotMatter) {
  std::string body(kHamBody);
  std::string answer =
      "SPAMD/1.5 0 EX_OK\r\nspam:  False ; 0.1 / 5.0 \r\nX-Other: 1\r\n"
      "CONTENT-LENGTH: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  Result r = ParseHeadersResponse(answer);
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_EQ(r.score_text, "0.1");
  EXPECT_EQ(r.threshold_text, "5.0");
}

TEST(SpamdParserTest, WithoutContentLengthTheAnswerEndsAtEof) {
  std::string answer =
      "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 9.0 / 5.0\r\n\r\n" + std::string(kGtubeBody);
  ResponseParser p;
  EXPECT_EQ(p.Feed(answer), State::kNeedMore);
  EXPECT_EQ(p.Finish(), State::kDone);
  EXPECT_TRUE(p.result().ok());
  EXPECT_EQ(p.result().headers.size(), 4u);
}

TEST(SpamdParserTest, DoneAtContentLengthWithoutWaitingForEof) {
  std::string answer = Answer("True ; 9.0 / 5.0", kGtubeBody);
  ResponseParser p;
  EXPECT_EQ(p.Feed(answer + "trailing junk"), State::kDone);
  EXPECT_TRUE(p.result().ok());
  EXPECT_EQ(p.result().headers.size(), 4u);
  EXPECT_EQ(p.Feed("more"), State::kDone);
  EXPECT_EQ(p.Finish(), State::kDone);
}

TEST(SpamdParserTest, EmptyContentLength) {
  Result r = ParseHeadersResponse(
      "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: False ; 0.0 / "
      "5.0\r\n\r\n");
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_TRUE(r.headers.empty());
}

TEST(SpamdParserTest, SplitReadsByteByByte) {
  std::string answer(kGtubeReportSafe0);
  ResponseParser p;
  for (std::size_t i = 0; i + 1 < answer.size(); ++i) {
    ASSERT_EQ(p.Feed(answer.substr(i, 1)), State::kNeedMore) << "at byte " << i;
  }
  EXPECT_EQ(p.Feed(answer.substr(answer.size() - 1)), State::kDone);
  Result r = p.TakeResult();
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_EQ(r.headers.size(), 6u);
  EXPECT_EQ(r.Find("X-Spam-Status")->raw, ParseHeadersResponse(kGtubeReportSafe0).headers[3].raw);
}

TEST(SpamdParserTest, SplitReadsAtEveryPoint) {
  std::string answer(kGtubeReportSafe0);
  Result whole = ParseHeadersResponse(answer);
  for (std::size_t cut = 0; cut <= answer.size(); ++cut) {
    ResponseParser p;
    p.Feed(answer.substr(0, cut));
    p.Feed(answer.substr(cut));
    ASSERT_EQ(p.Finish(), State::kDone) << "cut at " << cut;
    const Result& r = p.result();
    ASSERT_EQ(r.headers.size(), whole.headers.size()) << "cut at " << cut;
    for (std::size_t i = 0; i < r.headers.size(); ++i) {
      EXPECT_EQ(r.headers[i].raw, whole.headers[i].raw);
      EXPECT_EQ(r.headers[i].value, whole.headers[i].value);
    }
    EXPECT_EQ(r.score_text, "1000.0");
  }
}

TEST(SpamdParserTest, SpamdErrorAnswers) {
  Result r = ParseHeadersResponse(
      "SPAMD/1.0 76 Bad header line: (Content-Length mismatch: Expected 5 bytes, got 3 bytes)\r\n");
  EXPECT_EQ(r.error, Error::kSpamd);
  EXPECT_EQ(r.spamd_code, 76);
  EXPECT_NE(r.detail.find("Content-Length mismatch"), std::string::npos) << r.detail;

  // Seen as soon as the status line is in: no need to wait for more.
  ResponseParser p;
  EXPECT_EQ(p.Feed("SPAMD/1.0 69 Service Unavailable: x\r\n"), State::kError);
  EXPECT_EQ(p.result().error, Error::kSpamd);
  EXPECT_EQ(p.result().spamd_code, 69);

  // An error line without a line ending, then EOF.
  r = ParseHeadersResponse("SPAMD/1.0 79 Timeout: (30 second timeout while trying to HEADERS)");
  EXPECT_EQ(r.error, Error::kSpamd);
  EXPECT_EQ(r.spamd_code, 79);
}

TEST(SpamdParserTest, MalformedAnswers) {
  const std::string body(kHamBody);
  const std::string cl = "Content-length: " + std::to_string(body.size()) + "\r\n";
  struct Case {
    std::string answer;
    Error error;
  } cases[] = {
      {"", Error::kIo},
      {"HTTP/1.1 200 OK\r\n\r\n", Error::kProtocol},
      {"SPAMD/1.1 x EX_OK\r\n", Error::kProtocol},
      {"SPAMD/1.1\r\n", Error::kProtocol},
      {"SPAMD/one 0 EX_OK\r\n", Error::kProtocol},
      {"SPAMD/1.1 -1 EX_OK\r\n", Error::kProtocol},
      {"SPAMD/1.1 0 EX_OK\r\n" + cl + "\r\n" + body, Error::kProtocol},  // no Spam line
      {"SPAMD/1.1 0 EX_OK\r\n" + cl + "Spam: Maybe ; 1.0 / 5.0\r\n\r\n" + body, Error::kProtocol},
      {"SPAMD/1.1 0 EX_OK\r\n" + cl + "Spam: True ; abc / 5.0\r\n\r\n" + body, Error::kProtocol},
      {"SPAMD/1.1 0 EX_OK\r\n" + cl + "Spam: True 1.0 / 5.0\r\n\r\n" + body, Error::kProtocol},
      {"SPAMD/1.1 0 EX_OK\r\n" + cl + "Spam: True ; 1.0 5.0\r\n\r\n" + body, Error::kProtocol},
      {"SPAMD/1.1 0 EX_OK\r\n" + cl + "Spam: True ; 1.0 / \r\n\r\n" + body, Error::kProtocol},
      {"SPAMD/1.1 0 EX_OK\r\nContent-length: 12x\r\nSpam: True ; 1 / 5\r\n\r\n", Error::kProtocol},
      {"SPAMD/1.1 0 EX_OK\r\nContent-length: -1\r\nSpam: True ; 1 / 5\r\n\r\n", Error::kProtocol},
      {"SPAMD/1.1 0 EX_OK\r\nno colon here\r\n\r\n", Error::kProtocol},
      // Cut short: inside the header, and before Content-length bytes.
      {"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n", Error::kProtocol},
      {"SPAMD/1.1 0 EX_OK\r\n" + cl + "Spam: True ; 1 / 5\r\n\r\n" + body.substr(0, 20),
       Error::kProtocol},
      {"SPAMD/1.1 0 EX_OK", Error::kProtocol},
  };
  for (const Case& c : cases) {
    Result r = ParseHeadersResponse(c.answer);
    EXPECT_EQ(r.error, c.error) << "answer: " << c.answer << "\ndetail: " << r.detail;
    EXPECT_FALSE(r.detail.empty());
    EXPECT_TRUE(r.headers.empty());
  }
}

TEST(SpamdParserTest, SizeLimits) {
  // Content-length over the limit: refused before reading the body.
  ResponseParser p(100);
  EXPECT_EQ(p.Feed("SPAMD/1.1 0 EX_OK\r\nContent-length: 101\r\nSpam: True ; 1 / 5\r\n\r\n"),
            State::kError);
  EXPECT_EQ(p.result().error, Error::kProtocol);

  // No Content-length and more than the limit.
  ResponseParser q(100);
  q.Feed("SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n\r\n");
  EXPECT_EQ(q.Feed(std::string(60, 'a')), State::kNeedMore);
  EXPECT_EQ(q.Feed(std::string(60, 'a')), State::kError);
  EXPECT_EQ(q.result().error, Error::kProtocol);

  // An endless status line.
  ResponseParser s;
  State st = State::kNeedMore;
  for (int i = 0; i < 100 && st == State::kNeedMore; ++i) st = s.Feed(std::string(1000, 'S'));
  EXPECT_EQ(st, State::kError);
  EXPECT_EQ(s.result().error, Error::kProtocol);
}

TEST(SpamdParserTest, ExtractSpamHeaders) {
  auto h = ExtractSpamHeaders(
      "\tstray continuation\r\n"
      "X-Spamd-Result: not ours\r\n"
      "X-Spam: no hyphen after Spam\r\n"
      "Subject: x\r\n"
      "\tfolded subject\r\n"
      "x-spam-flag:YES\r\n"
      "X Spam-Bad: invalid name\r\n"
      "\tcontinues the invalid one\r\n"
      "X-Spam-Status: No,\r\n"
      " score=1.0\r\n"
      "\r\n"
      "X-Spam-After-Blank: body, not header\r\n");
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0].name, "x-spam-flag");
  EXPECT_EQ(h[0].value, "YES");
  EXPECT_EQ(h[1].name, "X-Spam-Status");
  EXPECT_EQ(h[1].value, "No, score=1.0");
  EXPECT_EQ(h[1].raw, "X-Spam-Status: No,\r\n score=1.0");

  // The last field may lack its line ending.
  h = ExtractSpamHeaders("X-Spam-Flag: YES");
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].value, "YES");
}

TEST(SpamdRequestTest, BuildsTheHeadersRequest) {
  EXPECT_EQ(BuildHeadersRequest(123, ""), "HEADERS SPAMC/1.5\r\nContent-length: 123\r\n\r\n");
  EXPECT_EQ(BuildHeadersRequest(0, "alice"),
            "HEADERS SPAMC/1.5\r\nContent-length: 0\r\nUser: alice\r\n\r\n");
}

TEST(SpamdRequestTest, ErrorNames) {
  EXPECT_EQ(ErrorName(Error::kNone), "none");
  EXPECT_EQ(ErrorName(Error::kConnectionRefused), "connection_refused");
  EXPECT_EQ(ErrorName(Error::kTimeout), "timeout");
  EXPECT_EQ(ErrorName(Error::kProtocol), "protocol");
  EXPECT_EQ(ErrorName(Error::kSpamd), "spamd");
  EXPECT_EQ(ErrorName(Error::kTooLarge), "too_large");
}

// ---------------------------------------------------------------- a fake spamd

// Accepts one connection (TCP on 127.0.0.1 or a unix socket) in a thread and runs
// a script on it. Every wait is bounded, so a broken test cannot hang.
class FakeSpamd {
 public:
  using Script = std::function<void(int fd, FakeSpamd& self)>;

  static std::unique_ptr<FakeSpamd> Tcp(Script script) {
    auto f = std::unique_ptr<FakeSpamd>(new FakeSpamd());
    f->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(f->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    socklen_t len = sizeof addr;
    ::getsockname(f->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    f->address_ = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
    f->Start(std::move(script));
    return f;
  }

  static std::unique_ptr<FakeSpamd> Unix(Script script) {
    auto f = std::unique_ptr<FakeSpamd>(new FakeSpamd());
    char tmpl[] = "/tmp/spamd-client-test-XXXXXX";
    EXPECT_NE(::mkdtemp(tmpl), nullptr);
    f->dir_ = tmpl;
    f->address_ = f->dir_ + "/spamd.sock";
    f->listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, f->address_.c_str(), f->address_.size());
    EXPECT_EQ(::bind(f->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    f->Start(std::move(script));
    return f;
  }

  ~FakeSpamd() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (!dir_.empty()) {
      ::unlink(address_.c_str());
      ::rmdir(dir_.c_str());
    }
  }

  const std::string& address() const { return address_; }
  // Everything the client sent; waits for the script to end.
  std::string received() {
    Join();
    return received_;
  }
  // What has arrived so far (for scripts).
  const std::string& data() const { return received_; }
  bool accepted() const { return accepted_; }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  // Reads a request: its header block, then Content-length bytes.
  void ReadRequest(int fd) {
    std::size_t end;
    while ((end = received_.find("\r\n\r\n")) == std::string::npos) {
      if (!ReadSome(fd)) return;
    }
    std::size_t length = 0;
    std::size_t cl = received_.find("Content-length: ");
    if (cl != std::string::npos && cl < end)
      length = std::strtoul(&received_[cl + 16], nullptr, 10);
    while (received_.size() < end + 4 + length) {
      if (!ReadSome(fd)) return;
    }
  }
  // Reads until the client closes (or 10 s pass).
  void DrainUntilEof(int fd) {
    while (ReadSome(fd)) {
    }
  }
  bool ReadSome(int fd) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!stop_ && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[65536];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return false;
      received_.append(buf, static_cast<std::size_t>(n));
      return true;
    }
    return false;
  }
  // Waits until the test is over (the destructor), without reading.
  void WaitUntilStopped() {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!stop_ && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  }
  static bool Send(int fd, std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

 private:
  FakeSpamd() = default;

  void Start(Script script) {
    EXPECT_EQ(::listen(listen_fd_, 8), 0);
    thread_ = std::thread([this, script = std::move(script)] {
      auto deadline = std::chrono::steady_clock::now() + 10s;
      while (!stop_ && std::chrono::steady_clock::now() < deadline) {
        pollfd p{listen_fd_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        accepted_ = true;
        script(fd, *this);
        ::close(fd);
        return;
      }
    });
  }

  int listen_fd_ = -1;
  std::string address_;
  std::string dir_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> accepted_{false};
  std::string received_;
};

ClientOptions Options(const std::string& address) {
  ClientOptions o;
  o.address = address;
  o.timeout = 5s;
  o.connect_timeout = 2s;
  return o;
}

long long MillisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

TEST(SpamdClientTest, ChecksAMessageOverTcp) {
  auto fake = FakeSpamd::Tcp([](int fd, FakeSpamd& self) {
    self.ReadRequest(fd);
    FakeSpamd::Send(fd, kGtubeReportSafe0);
  });
  ClientOptions o = Options(fake->address());
  o.user = "alice";
  Result r = Check(o, kMessage);
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_TRUE(r.is_spam);
  EXPECT_EQ(r.Find("X-Spam-Flag")->value, "YES");
  EXPECT_EQ(fake->received(),
            "HEADERS SPAMC/1.5\r\nContent-length: " + std::to_string(kMessage.size()) +
                "\r\nUser: alice\r\n\r\n" + std::string(kMessage));
}

TEST(SpamdClientTest, ChecksAMessageOverAUnixSocket) {
  auto fake = FakeSpamd::Unix([](int fd, FakeSpamd& self) {
    self.ReadRequest(fd);
    FakeSpamd::Send(fd, Answer("False ; -0.0 / 5.0", kHamBody));
  });
  Result plain = Check(Options(fake->address()), kMessage);
  ASSERT_TRUE(plain.ok()) << plain.detail;
  EXPECT_FALSE(plain.is_spam);
  EXPECT_EQ(plain.headers.size(), 3u);

  auto fake2 = FakeSpamd::Unix([](int fd, FakeSpamd& self) {
    self.ReadRequest(fd);
    FakeSpamd::Send(fd, Answer("False ; -0.0 / 5.0", kHamBody));
  });
  Result r = Check(Options("unix:" + fake2->address()), kMessage);
  ASSERT_TRUE(r.ok()) << r.detail;
}

TEST(SpamdClientTest, AnswerInSmallPiecesWithPauses) {
  auto fake = FakeSpamd::Tcp([](int fd, FakeSpamd& self) {
    self.ReadRequest(fd);
    std::string_view answer = kGtubeReportSafe0;
    for (std::size_t i = 0; i < answer.size(); i += 7) {
      FakeSpamd::Send(fd, answer.substr(i, 7));
      if (i % 140 == 0) std::this_thread::sleep_for(2ms);
    }
  });
  Result r = Check(Options(fake->address()), kMessage);
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_EQ(r.headers.size(), 6u);
}

TEST(SpamdClientTest, LargeMessageIsSentWhole) {
  std::string big(kMessage);
  while (big.size() < 450 * 1024) big += "A line of body text that makes the message larger.\r\n";
  auto fake = FakeSpamd::Tcp([](int fd, FakeSpamd& self) {
    self.ReadRequest(fd);
    FakeSpamd::Send(fd, Answer("False ; 0.0 / 5.0", kHamBody));
  });
  Result r = Check(Options(fake->address()), big);
  ASSERT_TRUE(r.ok()) << r.detail;
  std::string received = fake->received();
  EXPECT_TRUE(received.ends_with(big));
  EXPECT_EQ(received.size(), BuildHeadersRequest(big.size(), "").size() + big.size());
}

TEST(SpamdClientTest, TooLargeIsNotSent) {
  auto fake = FakeSpamd::Tcp([](int, FakeSpamd&) {});
  ClientOptions o = Options(fake->address());
  o.max_message_size = kMessage.size() - 1;
  Result r = Check(o, kMessage);
  EXPECT_EQ(r.error, Error::kTooLarge);
  EXPECT_FALSE(fake->accepted());
  o.max_message_size = kDefaultMaxMessageSize;
  EXPECT_EQ(kDefaultMaxMessageSize, 512000u);  // spamc's -s default
}

TEST(SpamdClientTest, SpamdErrorAnswerBeforeTheWholeMessage) {
  std::string big(600 * 1024, 'x');
  auto fake = FakeSpamd::Tcp([](int fd, FakeSpamd& self) {
    // Answer after the request header only, as spamd does for a bad header.
    while (self.data().empty()) {
      if (!self.ReadSome(fd)) return;
    }
    FakeSpamd::Send(fd, "SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n");
    ::shutdown(fd, SHUT_WR);
    self.DrainUntilEof(fd);
  });
  ClientOptions o = Options(fake->address());
  o.max_message_size = big.size();
  Result r = Check(o, big);
  EXPECT_EQ(r.error, Error::kSpamd) << r.detail;
  EXPECT_EQ(r.spamd_code, 76);
}

TEST(SpamdClientTest, ClosedWithoutAnswer) {
  auto fake = FakeSpamd::Tcp([](int fd, FakeSpamd& self) { self.ReadRequest(fd); });
  Result r = Check(Options(fake->address()), kMessage);
  EXPECT_EQ(r.error, Error::kIo) << r.detail;
}

TEST(SpamdClientTest, NoAnswerTimesOut) {
  auto fake = FakeSpamd::Tcp([](int fd, FakeSpamd& self) {
    self.ReadRequest(fd);
    self.WaitUntilStopped();  // never answers
  });
  ClientOptions o = Options(fake->address());
  o.timeout = 300ms;
  auto start = std::chrono::steady_clock::now();
  Result r = Check(o, kMessage);
  long long ms = MillisSince(start);
  EXPECT_EQ(r.error, Error::kTimeout) << r.detail;
  EXPECT_GE(ms, 300);
  EXPECT_LT(ms, 2000);
  EXPECT_NE(r.detail.find("300 ms"), std::string::npos) << r.detail;
}

TEST(SpamdClientTest, TheDeadlineCoversTheWholeCallNotEachRead) {
  // An answer that keeps trickling in never extends the deadline.
  auto fake = FakeSpamd::Tcp([](int fd, FakeSpamd& self) {
    self.ReadRequest(fd);
    std::string answer = Answer("True ; 9.0 / 5.0", kGtubeBody);
    for (char c : answer) {
      if (!FakeSpamd::Send(fd, std::string_view(&c, 1))) return;  // the client hung up
      std::this_thread::sleep_for(20ms);
    }
  });
  ClientOptions o = Options(fake->address());
  o.timeout = 400ms;
  auto start = std::chrono::steady_clock::now();
  Result r = Check(o, kMessage);
  long long ms = MillisSince(start);
  EXPECT_EQ(r.error, Error::kTimeout) << r.detail;
  EXPECT_LT(ms, 2000);
}

TEST(SpamdClientTest, ConnectionRefusedIsPrompt) {
  // A port that was just free: bound, never listened on.
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  std::string address = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  auto start = std::chrono::steady_clock::now();
  Result r = Check(Options(address), kMessage);
  ::close(s);
  EXPECT_EQ(r.error, Error::kConnectionRefused) << r.detail;
  EXPECT_NE(r.detail.find(address), std::string::npos) << r.detail;
  EXPECT_LT(MillisSince(start), 1000);
  EXPECT_EQ(Ping(Options(address)).error, Error::kConnectionRefused);
}

TEST(SpamdClientTest, MissingUnixSocketIsConnectionRefused) {
  Result r = Check(Options("/nonexistent/spamd.sock"), kMessage);
  EXPECT_EQ(r.error, Error::kConnectionRefused) << r.detail;
}

TEST(SpamdClientTest, ConnectTimeout) {
  // A listener whose accept queue is full: further SYNs are dropped, so connect()
  // hangs until the connect deadline.
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  ASSERT_EQ(::listen(s, 0), 0);
  std::vector<int> fillers;
  for (int i = 0; i < 8; ++i) {
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    fillers.push_back(c);
  }
  std::this_thread::sleep_for(50ms);
  ClientOptions o = Options("127.0.0.1:" + std::to_string(ntohs(addr.sin_port)));
  o.connect_timeout = 200ms;
  auto start = std::chrono::steady_clock::now();
  Result r = Check(o, kMessage);
  long long ms = MillisSince(start);
  for (int c : fillers) ::close(c);
  ::close(s);
  EXPECT_EQ(r.error, Error::kTimeout) << r.detail;
  EXPECT_NE(r.detail.find("connect"), std::string::npos) << r.detail;
  EXPECT_GE(ms, 200);
  EXPECT_LT(ms, 2000);
}

TEST(SpamdClientTest, BadAddresses) {
  for (const char* address :
       {"", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:x", "[::1", "[::1]x"}) {
    Result r = Check(Options(address), kMessage);
    EXPECT_EQ(r.error, Error::kBadAddress) << address << ": " << r.detail;
  }
  std::string long_path = "/" + std::string(200, 'p');
  EXPECT_EQ(Check(Options(long_path), kMessage).error, Error::kBadAddress);
}

TEST(SpamdClientTest, Ping) {
  auto fake = FakeSpamd::Tcp([](int fd, FakeSpamd& self) {
    while (self.data().find("\r\n\r\n") == std::string::npos) {
      if (!self.ReadSome(fd)) return;
    }
    FakeSpamd::Send(fd, "SPAMD/1.5 0 PONG\r\n");
  });
  Result r = Ping(Options(fake->address()));
  EXPECT_TRUE(r.ok()) << r.detail;
  EXPECT_EQ(fake->received(), "PING SPAMC/1.5\r\n\r\n");

  auto bad = FakeSpamd::Tcp([](int fd, FakeSpamd&) { FakeSpamd::Send(fd, "+OK POP3 ready\r\n"); });
  EXPECT_EQ(Ping(Options(bad->address())).error, Error::kProtocol);
}

TEST(SpamdAddressTest, TheFormIsCheckedAtStartUp) {
  EXPECT_EQ(AddressProblem("127.0.0.1:783"), "");
  EXPECT_EQ(AddressProblem("[::1]:783"), "");
  EXPECT_EQ(AddressProblem("spamd.example.org"), "");  // the default port
  EXPECT_NE(AddressProblem(""), "");
  EXPECT_NE(AddressProblem("127.0.0.1:99999"), "");
  EXPECT_NE(AddressProblem("127.0.0.1:0"), "");
  EXPECT_NE(AddressProblem("127.0.0.1:http"), "");
  EXPECT_NE(AddressProblem("[::1:783"), "");
  EXPECT_NE(AddressProblem("/nonexistent/spamd.sock").find("No such file"), std::string::npos);
  // A socket that exists is fine, whether or not spamd listens on it.
  std::string path = "/tmp/popgate_spamd_address_test_" + std::to_string(::getpid());
  std::FILE* plain = std::fopen(path.c_str(), "w");
  ASSERT_NE(plain, nullptr);
  std::fclose(plain);
  EXPECT_NE(AddressProblem(path).find("is not a socket"), std::string::npos);
  ::unlink(path.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(AddressProblem(path), "");
  ::close(fd);
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace popgate::spamd
