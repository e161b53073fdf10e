// The alias store: promote, rollback, remove, delete, history, validation,
// checksum, and atomicity under concurrent writers (threads and processes).
#include "registry/aliases.h"

#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <thread>

#include "registry/store.h"
#include "tests/registry/registry_test_util.h"

namespace polis::registry {
namespace {

using testing::TempDir;

class AliasesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 4; ++i)
      testing::Publish(root(), "m", testing::MakeArtifact(testing::kLinear, {4}, 10 + i));
  }
  const std::string& root() const { return dir_.path(); }
  TempDir dir_;
  Actor alice{"alice", "first release"};
};

TEST_F(AliasesTest, SetReadAndHistory) {
  auto t = ReadAliases(root(), "m");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_TRUE(t->aliases.empty());
  auto c = SetAlias(root(), "m", "production", 2, alice);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->events.size(), 1u);
  EXPECT_EQ(c->events[0].from, 0);
  EXPECT_EQ(c->events[0].to, 2);
  EXPECT_EQ(c->events[0].who, "alice");
  EXPECT_EQ(c->events[0].why, "first release");
  EXPECT_FALSE(c->events[0].when.empty());
  c = SetAlias(root(), "m", "production", 3, Actor{"bob", "better"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->events[0].from, 2);
  // Setting it to what it already is changes nothing.
  c = SetAlias(root(), "m", "production", 3, Actor{"bob", "again"});
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->changed());
  t = ReadAliases(root(), "m");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->aliases.at("production"), 3);
  ASSERT_EQ(t->history.size(), 2u);
  EXPECT_EQ(t->history[1].seq, 2);
  EXPECT_EQ(t->history[1].who, "bob");
  auto v = ResolveVersionRef(root(), "m", "production");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 3);
  EXPECT_EQ(*ResolveVersionRef(root(), "m", "latest"), 4);
  EXPECT_EQ(*ResolveVersionRef(root(), "m", "2"), 2);
  EXPECT_EQ(ResolveVersionRef(root(), "m", "staging").status().code(), Code::kNotFound);
  EXPECT_EQ(ResolveVersionRef(root(), "m", "9").status().code(), Code::kNotFound);
}

TEST_F(AliasesTest, RefusesBadNamesAndMissingVersions) {
  EXPECT_EQ(SetAlias(root(), "m", "latest", 1, alice).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(SetAlias(root(), "m", "3", 1, alice).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(SetAlias(root(), "m", "a/b", 1, alice).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(SetAlias(root(), "m", "", 1, alice).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(SetAlias(root(), "m", std::string(65, 'a'), 1, alice).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(SetAlias(root(), "m", "prod", 9, alice).status().code(), Code::kNotFound);
  EXPECT_EQ(SetAlias(root(), "../m", "prod", 1, alice).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(SetAlias(root(), "nope", "prod", 1, alice).status().code(), Code::kNotFound);
  EXPECT_TRUE(SetAlias(root(), "m", "canary-2.eu_west", 1, alice).ok());
}

TEST_F(AliasesTest, RollbackWalksBackThroughHistory) {
  ASSERT_TRUE(SetAlias(root(), "m", "production", 1, alice).ok());
  ASSERT_TRUE(SetAlias(root(), "m", "production", 2, alice).ok());
  ASSERT_TRUE(SetAlias(root(), "m", "staging", 4, alice).ok());
  ASSERT_TRUE(SetAlias(root(), "m", "production", 3, alice).ok());
  auto c = RollbackAlias(root(), "m", "production", Actor{"ops", "bad latency"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->events[0].action, "rollback");
  EXPECT_EQ(c->events[0].from, 3);
  EXPECT_EQ(c->events[0].to, 2);
  c = RollbackAlias(root(), "m", "production", Actor{"ops", "still bad"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->table.aliases.at("production"), 1);
  EXPECT_EQ(c->table.aliases.at("staging"), 4);  // untouched
  auto none = RollbackAlias(root(), "m", "production", alice);
  EXPECT_EQ(none.status().code(), Code::kFailedPrecondition) << none.status().ToString();
  EXPECT_EQ(RollbackAlias(root(), "m", "canary", alice).status().code(), Code::kNotFound);
}

TEST_F(AliasesTest, RollbackSkipsDeletedVersions) {
  ASSERT_TRUE(SetAlias(root(), "m", "production", 1, alice).ok());
  ASSERT_TRUE(SetAlias(root(), "m", "production", 2, alice).ok());
  ASSERT_TRUE(SetAlias(root(), "m", "production", 3, alice).ok());
  ASSERT_TRUE(DeleteVersion(root(), "m", 2, false, alice).ok());
  auto c = RollbackAlias(root(), "m", "production", alice);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->table.aliases.at("production"), 1);
}

TEST_F(AliasesTest, DeleteRefusesAliasedVersionUnlessForced) {
  ASSERT_TRUE(SetAlias(root(), "m", "production", 2, alice).ok());
  ASSERT_TRUE(SetAlias(root(), "m", "staging", 2, alice).ok());
  auto refused = DeleteVersion(root(), "m", 2, false, alice);
  ASSERT_EQ(refused.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("production, staging"), std::string::npos)
      << refused.status().message();
  EXPECT_TRUE(PathExists(root() + "/m/2/model.polis"));
  auto forced = DeleteVersion(root(), "m", 2, true, Actor{"ops", "broken"});
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  EXPECT_FALSE(PathExists(root() + "/m/2"));
  EXPECT_TRUE(forced->table.aliases.empty());
  ASSERT_EQ(forced->events.size(), 3u);  // two alias removals, one delete
  EXPECT_EQ(forced->events[2].action, "delete-version");
  EXPECT_EQ(forced->events[2].from, 2);
  EXPECT_EQ(*ListVersions(root(), "m"), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ(DeleteVersion(root(), "m", 2, false, alice).status().code(), Code::kNotFound);
  // An unaliased version goes without force.
  EXPECT_TRUE(DeleteVersion(root(), "m", 1, false, alice).ok());
}

// A deleted version's number is never handed out again: a client that
// cached "version 4" must not silently get another model under that name.
TEST_F(AliasesTest, DeletedVersionNumbersAreNotReused) {
  ASSERT_TRUE(DeleteVersion(root(), "m", 4, false, alice).ok());
  ASSERT_TRUE(DeleteVersion(root(), "m", 3, false, alice).ok());
  EXPECT_EQ(*HighestRetiredVersion(root(), "m"), 4);
  EXPECT_EQ(testing::Publish(root(), "m", testing::MakeArtifact(testing::kLinear, {4}, 30)), 5);
  EXPECT_EQ(*ListVersions(root(), "m"), (std::vector<int64_t>{1, 2, 5}));
  // A damaged record is reported, not guessed around.
  ASSERT_TRUE(WriteFileAtomic(root() + "/m/.retired_versions", "four\n").ok());
  auto bad = HighestRetiredVersion(root(), "m");
  ASSERT_EQ(bad.status().code(), Code::kDataLoss);
  EXPECT_NE(bad.status().message().find(".retired_versions"), std::string::npos);
}

TEST_F(AliasesTest, TamperedFileIsRefused) {
  ASSERT_TRUE(SetAlias(root(), "m", "production", 2, alice).ok());
  const std::string path = root() + "/m/aliases.json";
  std::string text = *ReadFile(path);
  const size_t at = text.find("\"production\": 2");
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, 15, "\"production\": 1");
  ASSERT_TRUE(WriteFileAtomic(path, text).ok());
  auto t = ReadAliases(root(), "m");
  EXPECT_EQ(t.status().code(), Code::kDataLoss);
  EXPECT_NE(t.status().message().find("checksum"), std::string::npos) << t.status().message();
  // Writers refuse to build on a damaged file too.
  EXPECT_EQ(SetAlias(root(), "m", "production", 3, alice).status().code(), Code::kDataLoss);
}

// Replays the history and checks it is one consistent, gap-free sequence
// whose end state is the table's.
void ExpectConsistent(const AliasTable& t) {
  std::map<std::string, int64_t> state;
  for (size_t i = 0; i < t.history.size(); ++i) {
    const AliasEvent& e = t.history[i];
    EXPECT_EQ(e.seq, static_cast<int64_t>(i) + 1);
    if (e.alias.empty()) continue;
    auto it = state.find(e.alias);
    EXPECT_EQ(it == state.end() ? 0 : it->second, e.from) << "event " << e.seq;
    if (e.to) state[e.alias] = e.to;
    else state.erase(e.alias);
  }
  EXPECT_EQ(state, t.aliases);
}

TEST_F(AliasesTest, ConcurrentPromotesFromThreadsSerialise) {
  constexpr int kThreads = 6, kEach = 10;
  std::atomic<int> changes{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const std::string alias = (t % 2) ? "production" : "staging";
        auto c = SetAlias(root(), "m", alias, 1 + (t + i) % 4,
                          Actor{"t" + std::to_string(t), std::to_string(i)});
        ASSERT_TRUE(c.ok()) << c.status().ToString();
        changes += static_cast<int>(c->events.size());
      }
    });
  for (auto& th : threads) th.join();
  auto t = ReadAliases(root(), "m");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(static_cast<int>(t->history.size()), changes.load());
  ExpectConsistent(*t);
}

TEST_F(AliasesTest, ConcurrentPromotesFromProcessesSerialise) {
  constexpr int kProcs = 4, kEach = 8;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int bad = 0;
      for (int i = 0; i < kEach; ++i) {
        // Alternate so every call is a change.
        auto c = SetAlias(root(), "m", "production", 1 + (i % 2) + 2 * (p % 2),
                          Actor{"p" + std::to_string(p), ""});
        if (!c.ok()) bad++;
      }
      _exit(bad);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  auto t = ReadAliases(root(), "m");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ExpectConsistent(*t);
  EXPECT_GE(t->history.size(), 2u);
  EXPECT_LE(t->history.size(), static_cast<size_t>(kProcs * kEach));
}

TEST_F(AliasesTest, RecordEventAppendsModelLevelEvents) {
  auto c = RecordEvent(root(), "m", "publish", 4, Actor{"ci", "nightly"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->events[0].alias, "");
  EXPECT_EQ(c->events[0].to, 4);
  EXPECT_TRUE(c->table.aliases.empty());
}

}  // namespace
}  // namespace polis::registry
