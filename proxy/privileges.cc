#include "privileges.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace popgate::privileges {
namespace {

std::string ErrnoText(int error) { return std::strerror(error); }

std::string Describe(const Account& account) {
  return "user " + account.name + " (uid " + std::to_string(account.uid) + ", gid " +
         std::to_string(account.gid) + ")";
}

[[noreturn]] void Fail(const std::string& message) { throw PrivilegeError(message); }

bool RunningAs(const Account& account) {
  uid_t ruid = 0, euid = 0, suid = 0;
  gid_t rgid = 0, egid = 0, sgid = 0;
  if (::getresuid(&ruid, &euid, &suid) != 0 || ::getresgid(&rgid, &egid, &sgid) != 0) {
    return false;
  }
  return ruid == account.uid && euid == account.uid && suid == account.uid && rgid == account.gid &&
         egid == account.gid && sgid == account.gid;
}

// The groups initgroups gives the account: its primary group and those listing it.
std::vector<gid_t> GroupsOf(const Account& account) {
  int count = 64;
  std::vector<gid_t> groups(count);
  while (::getgrouplist(account.name.c_str(), account.gid, groups.data(), &count) < 0) {
    groups.resize(static_cast<std::size_t>(count));  // count now says how many there are
  }
  groups.resize(static_cast<std::size_t>(count));
  return groups;
}

std::vector<gid_t> CurrentGroups() {
  const int count = ::getgroups(0, nullptr);
  if (count < 0) Fail("after switching: getgroups: " + ErrnoText(errno));
  std::vector<gid_t> groups(static_cast<std::size_t>(count));
  if (::getgroups(count, groups.data()) < 0) {
    Fail("after switching: getgroups: " + ErrnoText(errno));
  }
  return groups;
}

// The four ids (real, effective, saved, file system) of a "Uid:" or "Gid:" line of
// /proc/.../status.
std::vector<unsigned long> IdsOf(const std::string& line) {
  std::istringstream fields(line.substr(line.find(':') + 1));
  std::vector<unsigned long> ids;
  unsigned long id = 0;
  while (fields >> id) ids.push_back(id);
  return ids;
}

// Every thread of the process, as the kernel sees it. glibc makes setuid and setgid
// (and setgroups) process-wide by running them on every thread; this checks that it
// did, for threads popgate did not start itself (a Python plugin's, in configure()).
// Without /proc (a chroot, a container without it) only the calling thread is checked.
void VerifyEveryThread(const Account& account) {
  std::error_code ec;
  std::filesystem::directory_iterator tasks("/proc/self/task", ec);
  if (ec) return;
  for (const auto& task : tasks) {
    std::ifstream status(task.path() / "status");
    bool seen = false;  // a thread that ended meanwhile has no status left to read
    bool uid_ok = false;
    bool gid_ok = false;
    std::string line;
    while (std::getline(status, line)) {
      const bool uid = line.starts_with("Uid:");
      if (!uid && !line.starts_with("Gid:")) continue;
      seen = true;
      const unsigned long want = uid ? account.uid : account.gid;
      const std::vector<unsigned long> ids = IdsOf(line);
      (uid ? uid_ok : gid_ok) =
          ids.size() == 4 &&
          std::ranges::all_of(ids, [want](unsigned long id) { return id == want; });
    }
    if (seen && !(uid_ok && gid_ok)) {
      Fail("after switching to " + Describe(account) + ": thread " +
           task.path().filename().string() + " still has other ids");
    }
  }
}

// `switched`: popgate made the switch itself, so the groups are exactly what initgroups
// gives the account; otherwise (started as the account) only root's group is refused.
void Verify(const Account& account, bool switched) {
  const std::string after = "after switching to " + Describe(account) + ": ";
  uid_t ruid = 0, euid = 0, suid = 0;
  gid_t rgid = 0, egid = 0, sgid = 0;
  if (::getresuid(&ruid, &euid, &suid) != 0) Fail(after + "getresuid: " + ErrnoText(errno));
  if (::getresgid(&rgid, &egid, &sgid) != 0) Fail(after + "getresgid: " + ErrnoText(errno));
  if (ruid != account.uid || euid != account.uid || suid != account.uid) {
    Fail(after + "uids are " + std::to_string(ruid) + "/" + std::to_string(euid) + "/" +
         std::to_string(suid) + " (real/effective/saved)");
  }
  if (rgid != account.gid || egid != account.gid || sgid != account.gid) {
    Fail(after + "gids are " + std::to_string(rgid) + "/" + std::to_string(egid) + "/" +
         std::to_string(sgid) + " (real/effective/saved)");
  }
  std::vector<gid_t> allowed = GroupsOf(account);
  std::vector<gid_t> groups = CurrentGroups();
  for (std::vector<gid_t>* list : {&allowed, &groups}) {
    std::ranges::sort(*list);
    list->erase(std::unique(list->begin(), list->end()), list->end());
  }
  if (std::ranges::binary_search(groups, 0) && !std::ranges::binary_search(allowed, 0)) {
    Fail(after + "root's group 0 is still a supplementary group");
  }
  if (switched && groups != allowed) {
    Fail(after + "the supplementary groups are not the user's (" + std::to_string(groups.size()) +
         " groups, the user has " + std::to_string(allowed.size()) + ")");
  }
  // The proof that nothing of root is left: getting it back must be refused.
  if (::setuid(0) == 0) Fail(after + "setuid(0) succeeded: root could be regained");
  if (account.gid != 0 && ::setgid(0) == 0) {
    Fail(after + "setgid(0) succeeded: group root could be regained");
  }
  VerifyEveryThread(account);
}

}  // namespace

Account LookUp(const std::string& name, const std::string& where) {
  passwd entry{};
  passwd* found = nullptr;
  std::array<char, 16384> buffer{};
  const int error = ::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (error != 0) Fail(where + ": cannot look up user " + name + ": " + ErrnoText(error));
  if (found == nullptr) Fail(where + ": no such user " + name);
  return Account{name, found->pw_uid, found->pw_gid};
}

void RequireCanSwitchTo(const Account& account, const std::string& where) {
  if (::geteuid() == 0 || RunningAs(account)) return;
  Fail(where + ": cannot run as " + Describe(account) + ": popgate was started as uid " +
       std::to_string(::geteuid()) + ", and only root can switch users (start it as root, or " +
       "as " + account.name + ")");
}

void MakeMissingDirectoriesFor(const Account& account, const std::string& dir) {
  // The missing ones, deepest first: "/a/b/c" with only /a there is c, b.
  std::vector<std::filesystem::path> missing;
  for (std::filesystem::path at = dir; !at.empty(); at = at.parent_path()) {
    struct stat info {};
    if (::stat(at.c_str(), &info) == 0) break;  // an admin's, or made earlier: left as it is
    if (errno != ENOENT) Fail(at.string() + ": " + ErrnoText(errno));
    missing.push_back(at);
    if (at == at.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    const std::string path = it->string();
    if (::mkdir(path.c_str(), 0700) != 0) {
      if (errno == EEXIST) continue;
      Fail(path + ": cannot create it: " + ErrnoText(errno));
    }
    // By descriptor, not by name: a name swapped for a symlink in between would hand
    // the account whatever the link points to.
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) Fail(path + ": cannot open the directory just made: " + ErrnoText(errno));
    const int changed = ::fchown(fd, account.uid, account.gid);
    const int error = errno;
    ::close(fd);
    if (changed != 0) {
      Fail(path + ": cannot give it to " + Describe(account) + ": " + ErrnoText(error));
    }
  }
}

void SwitchTo(const Account& account) {
  if (::geteuid() != 0) {  // RequireCanSwitchTo: already the account
    Verify(account, /*switched=*/false);
    return;
  }
  const std::string to = "cannot switch to " + Describe(account) + ": ";
  // Groups first: setgroups and setgid need root, which setuid gives up.
  if (::initgroups(account.name.c_str(), account.gid) != 0) {
    Fail(to + "initgroups: " + ErrnoText(errno));
  }
  if (::setgid(account.gid) != 0) Fail(to + "setgid: " + ErrnoText(errno));
  // As root, setuid sets the real, effective and saved uid: there is no way back.
  if (::setuid(account.uid) != 0) Fail(to + "setuid: " + ErrnoText(errno));
  Verify(account, /*switched=*/true);
}

void RequireWritableDirectory(const std::string& dir, const std::string& where,
                              const Account& account) {
  // access() checks the real ids, which are the account's now.
  if (::access(dir.c_str(), W_OK | X_OK) == 0) return;
  const int error = errno;
  Fail(where + ": " + dir + " is not writable by " + Describe(account) + ": " + ErrnoText(error) +
       " (popgate writes there as that user once started)");
}

}  // namespace popgate::privileges
