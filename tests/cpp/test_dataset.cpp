// Dataset statistics, popularity and k-core filtering.
#include <catch2/catch.hpp>

#include "llm4dsr/data/dataset.h"
#include "llm4dsr/data/readers.h"
#include "llm4dsr/error.h"
#include "test_support.h"

using Catch::Matchers::Contains;

namespace {

llm4dsr::Sequence seq(const std::string& user, std::vector<int64_t> items, std::vector<double> times = {}) {
  llm4dsr::Sequence s;
  s.user_id = user;
  s.items = std::move(items);
  s.timestamps = std::move(times);
  return s;
}

// Catalogue a, gone, b, c, lonely (ids 1..5).
llm4dsr::Dataset kcore_case() {
  llm4dsr::Dataset d;
  d.name = "toy";
  for (const char* id : {"a", "gone", "b", "c", "lonely"}) {
    const int64_t i = d.catalog.add(id);
    d.catalog.set_title(i, std::string("Title ") + id);
    d.catalog.set_extra(i, std::string("extra ") + id);
  }
  d.users.push_back(seq("U1", {1, 3, 2}, {10, 20, 30}));
  d.users.push_back(seq("U2", {1, 3}, {5, 6}));
  d.users.push_back(seq("U3", {4, 2}, {7, 8}));
  d.has_timestamps = true;
  d.recount_popularity();
  return d;
}

}  // namespace

TEST_CASE("compute_stats on per-user sequences", "[dataset]") {
  llm4dsr::Dataset d;
  for (const char* id : {"x", "y", "z", "w"}) d.catalog.add(id);
  d.catalog.set_title(1, "X");
  d.catalog.set_title(3, "Z");
  d.users.push_back(seq("a", {1, 2}));
  d.users.push_back(seq("b", {1, 2, 3}));
  auto noisy = seq("c", {4, 4, 1, 2, 3});
  noisy.labels = {0, 1, 0, 1, 2};
  noisy.original_items = {4, 1, 1, 3, 2};
  d.users.push_back(noisy);
  const auto stats = llm4dsr::compute_stats(d);
  CHECK(stats.users == 3);
  CHECK(stats.items == 4);
  CHECK(stats.interactions == 10);
  CHECK(stats.mean_length == Approx(10.0 / 3.0));
  CHECK(stats.min_length == 2);
  CHECK(stats.max_length == 5);
  CHECK(stats.titled_items == 2);
  CHECK(stats.noisy_interactions == 2);  // kReplaced (2) is not injected noise
  CHECK(stats.train == 0);

  const auto empty = llm4dsr::compute_stats(llm4dsr::Dataset{});
  CHECK(empty.users == 0);
  CHECK(empty.min_length == 0);
  CHECK(empty.mean_length == 0.0);
}

TEST_CASE("compute_stats and popularity on pre-split windows", "[dataset]") {
  llm4dsr::Dataset d;
  for (const char* id : {"x", "y", "z"}) d.catalog.add(id);
  llm4dsr::Splits splits;
  splits.train = {seq("u1", {1, 2}), seq("u1", {1, 2, 3}), seq("u2", {3, 1})};
  splits.valid = {seq("u2", {3, 1, 2})};
  splits.test = {seq("u3", {2, 3})};
  splits.train[0].labels = {1, 0};
  splits.train[0].original_items = {3, 2};
  d.splits = splits;
  d.recount_popularity();
  // Each window's target once: 2, 3, 1 | 2 | 3.
  CHECK(d.catalog.popularity() == std::vector<int64_t>{0, 1, 2, 2});
  const auto stats = llm4dsr::compute_stats(d);
  CHECK(stats.users == 3);
  CHECK(stats.train == 3);
  CHECK(stats.valid == 1);
  CHECK(stats.test == 1);
  CHECK(stats.interactions == 2 + 3 + 2 + 3 + 2);
  CHECK(stats.min_length == 2);
  CHECK(stats.max_length == 3);
  CHECK(stats.mean_length == Approx(12.0 / 5.0));
  CHECK(stats.noisy_interactions == 1);
  REQUIRE_THROWS_WITH(llm4dsr::kcore_filter(d, 2, 2), Contains("already split"));
}

TEST_CASE("recount_popularity counts every interaction of per-user data", "[dataset]") {
  auto d = kcore_case();
  CHECK(d.catalog.popularity() == std::vector<int64_t>{0, 2, 2, 2, 1, 0});
  d.catalog.add_popularity(5, 7);
  d.recount_popularity();
  CHECK(d.catalog.popularity(5) == 0);
}

TEST_CASE("k-core filtering cascades until both thresholds hold", "[dataset]") {
  // 2-core: item c (1 interaction) goes; U3 is left with [gone] and goes; that leaves gone with one
  // interaction, so it goes too; lonely (never seen) goes; U1 keeps a and b.
  auto d = kcore_case();
  llm4dsr::kcore_filter(d, 2, 2);
  REQUIRE(d.catalog.size() == 2);
  CHECK(d.catalog.external_id(1) == "a");
  CHECK(d.catalog.external_id(2) == "b");
  CHECK(d.catalog.title(2) == "Title b");
  CHECK(d.catalog.extra(2) == "extra b");
  REQUIRE(d.users.size() == 2);
  CHECK(d.users[0].user_id == "U1");
  CHECK(d.users[0].items == std::vector<int64_t>{1, 2});
  CHECK(d.users[0].timestamps == std::vector<double>{10, 20});
  CHECK(d.users[1].user_id == "U2");
  CHECK(d.users[1].items == std::vector<int64_t>{1, 2});
  CHECK(d.catalog.popularity() == std::vector<int64_t>{0, 2, 2});
  for (const auto& s : d.users) CHECK_NOTHROW(s.validate(d.catalog.size()));

  // Users only: U2 and U3 are shorter than 3; items are kept by a threshold of 0, even unseen ones.
  auto u = kcore_case();
  llm4dsr::kcore_filter(u, 3, 0);
  CHECK(u.users.size() == 1);
  CHECK(u.catalog.size() == 5);
  CHECK(u.catalog.popularity() == std::vector<int64_t>{0, 1, 1, 1, 0, 0});

  // Nothing to remove at (1, 1) except the never-seen item.
  auto one = kcore_case();
  llm4dsr::kcore_filter(one, 1, 1);
  CHECK(one.users.size() == 3);
  CHECK(one.catalog.size() == 4);
  CHECK(one.catalog.find("lonely") == std::nullopt);
  CHECK(one.users[2].items == std::vector<int64_t>{4, 2});  // c keeps id 4, gone keeps 2

  // Thresholds so high that nothing survives: an error naming them (nothing downstream can use an
  // empty dataset), and the dataset left as it was.
  auto none = kcore_case();
  CHECK_THROWS_WITH(llm4dsr::kcore_filter(none, 10, 1),
                    Catch::Contains("(users >= 10, items >= 1 interactions) removes every user"));
  CHECK(none.users.size() == 3);

  auto labelled = kcore_case();
  labelled.users[0].labels = {0, 0, 0};
  labelled.users[0].original_items = labelled.users[0].items;
  REQUIRE_THROWS_WITH(llm4dsr::kcore_filter(labelled, 2, 2), Contains("before noise injection") && Contains("U1"));
  REQUIRE_THROWS_WITH(llm4dsr::kcore_filter(labelled, -1, 2), Contains(">= 0"));
}

TEST_CASE("k-core on ML-100K matches an independent computation", "[dataset]") {
  const std::string data = llm4dsr::testing::shared_data_dir();
  if (data.empty()) {
    WARN("shared data absent; skipped");
    return;
  }
  // Reference figures from a plain-Python k-core over u.data (drop items below the item threshold,
  // then users below the user threshold, repeat until nothing changes).
  struct Case {
    int64_t users_k, items_k, users, items, interactions;
  };
  for (const Case c : {Case{5, 5, 943, 1349, 99287}, Case{20, 20, 917, 937, 94443}, Case{30, 10, 739, 1142, 93062}}) {
    auto d = llm4dsr::read_dataset(data + "/ml-100k");
    llm4dsr::kcore_filter(d, c.users_k, c.items_k);
    const auto stats = llm4dsr::compute_stats(d);
    CHECK(stats.users == c.users);
    CHECK(stats.items == c.items);
    CHECK(stats.interactions == c.interactions);
    CHECK(stats.min_length >= c.users_k);
    int64_t least = stats.interactions;
    for (int64_t i = 1; i <= d.catalog.size(); ++i) least = std::min(least, d.catalog.popularity(i));
    CHECK(least >= c.items_k);
  }
}
