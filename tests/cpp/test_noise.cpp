#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <vector>

#include "llm4dsr/data/noise.h"
#include "llm4dsr/error.h"

using namespace llm4dsr;

namespace {

// users x length positions, item ids cycling through 1..num_items.
SequenceSet make_users(int64_t users, int64_t length, int64_t num_items, bool with_time = false) {
  SequenceSet out;
  for (int64_t u = 0; u < users; ++u) {
    Sequence s;
    s.user_id = "u" + std::to_string(u);
    for (int64_t p = 0; p < length; ++p) {
      s.items.push_back(1 + (u * 7 + p * 13) % num_items);
      // Users interleave in time: user u's step p happens at 100 p + u.
      if (with_time) s.timestamps.push_back(static_cast<double>(100 * p + u));
    }
    out.push_back(std::move(s));
  }
  return out;
}

Dataset make_dataset(int64_t users, int64_t min_len, int64_t num_items) {
  Dataset ds;
  ds.name = "toy";
  ds.format = "synthetic";
  for (int64_t i = 1; i <= num_items; ++i) ds.catalog.add(std::to_string(i));
  for (int64_t u = 0; u < users; ++u) {
    Sequence s;
    s.user_id = "u" + std::to_string(u);
    const int64_t len = min_len + u % 9;  // lengths differ, so window counts differ per user
    for (int64_t p = 0; p < len; ++p) {
      s.items.push_back(1 + (u * 31 + p * 17) % num_items);
      s.timestamps.push_back(static_cast<double>(1000 * p + 3 * u));
    }
    ds.users.push_back(std::move(s));
  }
  ds.has_timestamps = true;
  return ds;
}

}  // namespace

TEST_CASE("inject_noise: empirical rate, exact labels, replacements in range and uniform", "[noise]") {
  const int64_t num_items = 5;
  for (double alpha : {0.1, 0.5}) {
    INFO("alpha " << alpha);
    const SequenceSet clean = make_users(2000, 100, num_items);  // 200,000 positions
    SequenceSet users = clean;
    inject_noise(users, num_items, {alpha, 42});
    int64_t total = 0, injected = 0;
    // replacement_counts[original][replacement]
    std::map<std::pair<int64_t, int64_t>, int64_t> pairs;
    for (size_t u = 0; u < users.size(); ++u) {
      const Sequence& s = users[u];
      REQUIRE(s.labels.size() == s.items.size());
      REQUIRE(s.original_items == clean[u].items);
      for (size_t p = 0; p < s.items.size(); ++p) {
        ++total;
        REQUIRE(s.items[p] >= 1);
        REQUIRE(s.items[p] <= num_items);
        const bool changed = s.items[p] != s.original_items[p];
        // With a replacement that never equals the original, label == injected iff the item changed.
        REQUIRE((s.labels[p] == static_cast<uint8_t>(NoiseLabel::kInjected)) == changed);
        REQUIRE((s.labels[p] == static_cast<uint8_t>(NoiseLabel::kClean)) == !changed);
        if (changed) {
          ++injected;
          ++pairs[{s.original_items[p], s.items[p]}];
        }
      }
    }
    REQUIRE(total == 200000);
    const double rate = static_cast<double>(injected) / total;
    const double se = std::sqrt(alpha * (1 - alpha) / total);
    CHECK(std::fabs(rate - alpha) < 4 * se);

    // Each original's replacements are uniform over the 4 other items.
    for (int64_t o = 1; o <= num_items; ++o) {
      int64_t from_o = 0;
      for (int64_t r = 1; r <= num_items; ++r) from_o += pairs[{o, r}];
      CHECK(pairs[{o, o}] == 0);
      for (int64_t r = 1; r <= num_items; ++r) {
        if (r == o) continue;
        const double share = static_cast<double>(pairs[{o, r}]) / from_o;
        const double se_share = std::sqrt(0.25 * 0.75 / from_o);
        INFO("original " << o << " -> " << r << " share " << share);
        CHECK(std::fabs(share - 0.25) < 4 * se_share);
      }
    }
  }
}

TEST_CASE("inject_noise: same seed same output, different seed different output", "[noise]") {
  const SequenceSet clean = make_users(50, 40, 300);
  SequenceSet a = clean, b = clean, c = clean;
  inject_noise(a, 300, {0.2, 7});
  inject_noise(b, 300, {0.2, 7});
  inject_noise(c, 300, {0.2, 8});
  int64_t differing = 0;
  for (size_t u = 0; u < a.size(); ++u) {
    CHECK(a[u].items == b[u].items);
    CHECK(a[u].labels == b[u].labels);
    differing += a[u].items != c[u].items;
  }
  CHECK(differing > 25);

  // A user's noise does not depend on the users after it (one stream per user).
  SequenceSet fewer(clean.begin(), clean.begin() + 10);
  inject_noise(fewer, 300, {0.2, 7});
  for (size_t u = 0; u < fewer.size(); ++u) CHECK(fewer[u].items == a[u].items);
}

TEST_CASE("inject_noise: protected positions are never noised and do not shift the others", "[noise]") {
  const SequenceSet clean = make_users(20, 30, 50);
  std::vector<std::vector<bool>> guard(clean.size());
  for (size_t u = 0; u < clean.size(); ++u) {
    guard[u].assign(clean[u].items.size(), false);
    for (size_t p = u % 3; p < guard[u].size(); p += 3) guard[u][p] = true;
  }
  // alpha = 1: every unprotected position must change, every protected one must not.
  SequenceSet all = clean;
  inject_noise(all, 50, {1.0, 3}, &guard);
  for (size_t u = 0; u < all.size(); ++u) {
    for (size_t p = 0; p < all[u].items.size(); ++p) {
      if (guard[u][p]) {
        CHECK(all[u].items[p] == clean[u].items[p]);
        CHECK(all[u].labels[p] == 0);
      } else {
        CHECK(all[u].items[p] != clean[u].items[p]);
        CHECK(all[u].labels[p] == 1);
      }
    }
  }
  // Same seed with and without protection: unprotected positions come out identical.
  SequenceSet with = clean, without = clean;
  inject_noise(with, 50, {0.4, 11}, &guard);
  inject_noise(without, 50, {0.4, 11});
  int64_t protected_hits = 0;
  for (size_t u = 0; u < with.size(); ++u) {
    for (size_t p = 0; p < with[u].items.size(); ++p) {
      if (guard[u][p]) {
        CHECK(with[u].items[p] == clean[u].items[p]);
        protected_hits += without[u].labels[p];
      } else {
        CHECK(with[u].items[p] == without[u].items[p]);
      }
    }
  }
  CHECK(protected_hits > 0);  // the guard did prevent some hits
}

TEST_CASE("inject_noise: argument errors", "[noise]") {
  SequenceSet users = make_users(2, 5, 10);
  CHECK_THROWS_WITH(inject_noise(users, 10, {1.5, 0}), Catch::Contains("alpha"));
  CHECK_THROWS_WITH(inject_noise(users, 10, {-0.1, 0}), Catch::Contains("alpha"));
  CHECK_THROWS_WITH(inject_noise(users, 10, {std::nan(""), 0}), Catch::Contains("alpha"));
  CHECK_THROWS_WITH(inject_noise(users, 1, {0.1, 0}), Catch::Contains("at least 2 items"));
  CHECK_THROWS_WITH(inject_noise(users, 5, {0.1, 0}), Catch::Contains("outside 1..5"));
  std::vector<std::vector<bool>> short_guard = {std::vector<bool>(5, false)};
  CHECK_THROWS_WITH(inject_noise(users, 10, {0.1, 0}, &short_guard), Catch::Contains("rows"));
  std::vector<std::vector<bool>> bad_row = {std::vector<bool>(5, false), std::vector<bool>(4, false)};
  CHECK_THROWS_WITH(inject_noise(users, 10, {0.1, 0}, &bad_row), Catch::Contains("u1"));
}

TEST_CASE("prepare (windows): test targets stay clean and windows agree with user-level noise", "[noise]") {
  const Dataset ds = make_dataset(60, 8, 200);
  PrepareOptions opt;
  opt.protocol = SplitProtocol::kWindows;
  opt.windows.max_length = 5;
  opt.noise_alpha = 0.3;
  opt.seed = 99;
  const Splits s = prepare(ds, opt);
  CHECK(s.protocol == SplitProtocol::kWindows);
  REQUIRE(!s.test.empty());

  // Independent computation: protect the test targets, inject into the users, then compare.
  const auto targets = window_test_targets(ds.users, opt.windows);
  SequenceSet noisy = ds.users;
  inject_noise(noisy, 200, {0.3, 99}, &targets);
  std::map<std::string, size_t> index;
  for (size_t u = 0; u < noisy.size(); ++u) index[noisy[u].user_id] = u;

  int64_t injected = 0, windows = 0;
  for (const auto* part : {&s.train, &s.valid, &s.test}) {
    for (const auto& w : *part) {
      ++windows;
      REQUIRE(w.labels.size() == w.items.size());
      const Sequence& user = noisy[index.at(w.user_id)];
      for (int64_t i = 0; i < w.size(); ++i) {
        const int64_t pos = w.offset + i;
        // Same (user, position), same item, label and original in every window holding it.
        REQUIRE(w.items[i] == user.items[pos]);
        REQUIRE(w.labels[i] == user.labels[pos]);
        REQUIRE(w.original_items[i] == ds.users[index.at(w.user_id)].items[pos]);
        injected += w.labels[i] == 1;
      }
    }
  }
  CHECK(windows == static_cast<int64_t>(s.train.size() + s.valid.size() + s.test.size()));
  CHECK(injected > 0);
  for (const auto& w : s.test) {
    CHECK(w.labels.back() == 0);
    CHECK(w.target() == w.original_items.back());
  }
  // The input dataset is not modified.
  CHECK(ds.users[0].labels.empty());
}

TEST_CASE("prepare (loo): each user's last item stays clean", "[noise]") {
  const Dataset ds = make_dataset(40, 6, 100);
  PrepareOptions opt;
  opt.protocol = SplitProtocol::kLeaveOneOut;
  opt.noise_alpha = 0.5;
  opt.seed = 5;
  const Splits s = prepare(ds, opt);
  CHECK(s.protocol == SplitProtocol::kLeaveOneOut);
  REQUIRE(s.test.size() == ds.users.size());
  int64_t injected = 0;
  for (size_t u = 0; u < s.test.size(); ++u) {
    const Sequence& t = s.test[u];
    CHECK(t.labels.back() == 0);
    CHECK(t.target() == ds.users[u].items.back());
    CHECK(t.original_items == ds.users[u].items);
    // valid and train are prefixes of the same noisy sequence.
    const Sequence& v = s.valid[u];
    CHECK(std::vector<int64_t>(t.items.begin(), t.items.end() - 1) == v.items);
    for (uint8_t l : t.labels) injected += l;
  }
  CHECK(injected > 0);
}

TEST_CASE("prepare: alpha 0 attaches clean labels; pre-split data passes through", "[noise]") {
  const Dataset ds = make_dataset(10, 4, 30);
  PrepareOptions opt;
  opt.windows.max_length = 3;
  const Splits s = prepare(ds, opt);
  for (const auto* part : {&s.train, &s.valid, &s.test}) {
    for (const auto& w : *part) {
      CHECK(w.labels == std::vector<uint8_t>(w.items.size(), 0));
      CHECK(w.original_items == w.items);
    }
  }

  Dataset pre;
  pre.name = "csv";
  pre.format = "llm4dsr-csv";
  for (int i = 1; i <= 3; ++i) pre.catalog.add(std::to_string(i));
  Splits given;
  Sequence w;
  w.user_id = "x";
  w.items = {1, 2, 3};
  given.train.push_back(w);
  pre.splits = given;
  const Splits back = prepare(pre, {});
  REQUIRE(back.train.size() == 1);
  CHECK(back.train[0].items == w.items);
  PrepareOptions noisy;
  noisy.noise_alpha = 0.1;
  CHECK_THROWS_WITH(prepare(pre, noisy), Catch::Contains("already split"));
  PrepareOptions bad;
  bad.noise_alpha = 2.0;
  CHECK_THROWS_AS(prepare(ds, bad), Error);
}
