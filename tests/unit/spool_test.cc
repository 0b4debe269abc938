#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

#include "spool/held_content.h"
#include "spool/spool_file.h"

namespace popgate::spool {
namespace {

namespace fs = std::filesystem;

// A fresh spool directory per test, removed afterwards.
class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "spool_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  bool DirEmpty() const { return fs::is_empty(dir_); }

  std::string dir_;
};

std::string Pattern(std::size_t size) {
  std::string bytes;
  for (std::size_t i = 0; bytes.size() < size; ++i) bytes += "line " + std::to_string(i) + "\r\n";
  bytes.resize(size);
  return bytes;
}

TEST_F(SpoolTest, MapsBackWhatWasAppendedAndLeavesNoFile) {
  const std::string bytes = Pattern(3 * 1024 * 1024 + 17) + std::string("\0\xff", 2);
  SpoolFile spool(dir_);
  EXPECT_TRUE(DirEmpty());  // unnamed from the start
  spool.Append(std::string_view(bytes).substr(0, 1000));
  spool.Append(std::string_view(bytes).substr(1000));
  EXPECT_EQ(spool.size(), bytes.size());
  mail::SharedBytes mapped = spool.Map();
  EXPECT_TRUE(mapped.file_backed());
  EXPECT_EQ(mapped.view(), bytes);
  EXPECT_TRUE(DirEmpty());
}

TEST_F(SpoolTest, MappingOutlivesTheSpoolFile) {
  mail::SharedBytes copy;
  {
    SpoolFile spool(dir_);
    spool.Append("kept alive by its copies\r\n");
    mail::SharedBytes mapped = spool.Map();
    copy = mapped;
  }
  EXPECT_EQ(copy.view(), "kept alive by its copies\r\n");
}

TEST_F(SpoolTest, DroppedPagesReadBackTheSame) {
  const std::string bytes = Pattern(1024 * 1024);
  SpoolFile spool(dir_);
  spool.Append(bytes);
  mail::SharedBytes mapped = spool.Map();
  ASSERT_EQ(mapped.view(), bytes);  // every page touched
  DropResidentPages(mapped, mapped.view().substr(5000, 700000));
  EXPECT_EQ(mapped.view(), bytes);
}

TEST_F(SpoolTest, DroppingPagesOfMemoryDoesNothing) {
  // Only a file's pages may be dropped: memory's would read back as zeros.
  const std::string bytes = Pattern(1024 * 1024);
  mail::SharedBytes held(bytes);
  DropResidentPages(held, held.view());
  EXPECT_EQ(held.view(), bytes);
}

TEST_F(SpoolTest, AMissingDirectoryIsNamedInTheError) {
  const std::string missing = dir_ + "/missing";
  try {
    SpoolFile spool(missing);
    FAIL() << "no error";
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
}

TEST_F(SpoolTest, HeldContentStaysInMemoryUpToItsLimit) {
  HeldContent held(1024, dir_);
  held.buffer() = Pattern(1024);
  const char* data = held.buffer().data();
  ASSERT_TRUE(held.Settle());
  EXPECT_FALSE(held.spooled());
  auto content = held.Take();
  ASSERT_TRUE(content);
  EXPECT_FALSE(content->file_backed());
  EXPECT_EQ(content->data(), data);  // the buffer itself, not a copy
  EXPECT_EQ(content->view(), Pattern(1024));
}

TEST_F(SpoolTest, HeldContentSpoolsPastItsLimitAndKeepsEveryByte) {
  const std::string bytes = Pattern(5 * 1024 * 1024 + 3);
  HeldContent held(64 * 1024, dir_);
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    std::size_t n = std::min<std::size_t>(40000, bytes.size() - pos);
    held.buffer().append(bytes, pos, n);
    pos += n;
    ASSERT_TRUE(held.Settle());
    EXPECT_EQ(held.size(), pos);
    // Once spooled, memory holds at most one read's worth.
    if (held.spooled()) {
      EXPECT_LE(held.buffer().size(), 40000u);
    }
  }
  EXPECT_TRUE(held.spooled());
  auto content = held.Take();
  ASSERT_TRUE(content);
  EXPECT_TRUE(content->file_backed());
  EXPECT_EQ(content->view(), bytes);
  EXPECT_TRUE(DirEmpty());
}

TEST_F(SpoolTest, HeldContentReportsASpoolThatCannotBeMade) {
  HeldContent held(1024, dir_ + "/gone");
  held.buffer() = Pattern(2048);
  EXPECT_FALSE(held.Settle());
  EXPECT_NE(held.error().find("gone"), std::string::npos) << held.error();
  EXPECT_EQ(held.size(), 2048u);  // nothing lost from what was counted
}

}  // namespace
}  // namespace popgate::spool
