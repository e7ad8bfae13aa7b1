#include <catch2/catch.hpp>

#include <vector>

#include "llm4dsr/data/splits.h"
#include "llm4dsr/error.h"

using namespace llm4dsr;

namespace {

Sequence make_user(const std::string& id, std::vector<int64_t> items, std::vector<double> timestamps = {}) {
  Sequence s;
  s.user_id = id;
  s.items = std::move(items);
  s.timestamps = std::move(timestamps);
  return s;
}

std::vector<int64_t> range_items(int64_t first, int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(first + i);
  return v;
}

}  // namespace

TEST_CASE("split protocol names round-trip", "[splits]") {
  CHECK(to_string(SplitProtocol::kWindows) == "windows");
  CHECK(to_string(SplitProtocol::kLeaveOneOut) == "loo");
  CHECK(parse_split_protocol("windows") == SplitProtocol::kWindows);
  CHECK(parse_split_protocol("loo") == SplitProtocol::kLeaveOneOut);
  CHECK(parse_split_protocol("leave-one-out") == SplitProtocol::kLeaveOneOut);
  CHECK_THROWS_AS(parse_split_protocol("random"), Error);
  CHECK_THROWS_WITH(parse_split_protocol("LOO"), Catch::Contains("'LOO'"));
}

TEST_CASE("windows: a user shorter than max_length gives one window, the whole sequence", "[splits]") {
  SequenceSet users = {make_user("a", {5, 6, 7}, {10, 20, 30})};
  // With one window, floor(0.8) = floor(0.1) = 0, so it is a test window.
  const Splits s = split_windows(users);
  CHECK(s.protocol == SplitProtocol::kWindows);
  CHECK(s.train.empty());
  CHECK(s.valid.empty());
  REQUIRE(s.test.size() == 1);
  CHECK(s.test[0].items == std::vector<int64_t>{5, 6, 7});
  CHECK(s.test[0].timestamps == std::vector<double>{10, 20, 30});
  CHECK(s.test[0].offset == 0);
  CHECK(s.test[0].user_id == "a");

  // All windows to train when the ratios say so; users with < 2 items give nothing.
  users.push_back(make_user("b", {9}));
  users.push_back(make_user("c", {}));
  const Splits all_train = split_windows(users, {11, 1.0, 0.0});
  REQUIRE(all_train.train.size() == 1);
  CHECK(all_train.train[0].user_id == "a");
  CHECK(all_train.valid.empty());
  CHECK(all_train.test.empty());
}

TEST_CASE("windows: length 13 with max_length 11 ends at positions 10, 11, 12", "[splits]") {
  Sequence u = make_user("u", range_items(101, 13));  // items 101..113 at positions 0..12
  u.labels.assign(13, 0);
  u.labels[11] = 1;
  u.original_items = u.items;
  u.original_items[11] = 500;
  const Splits s = split_windows({u}, {11, 0.0, 0.0});  // everything to test, in order
  REQUIRE(s.test.size() == 3);
  for (int k = 0; k < 3; ++k) {
    const Sequence& w = s.test[k];
    INFO("window " << k);
    CHECK(w.offset == k);
    CHECK(w.size() == 11);
    CHECK(w.items == range_items(101 + k, 11));
    CHECK(w.target() == 111 + k);
    CHECK(w.labels.size() == 11);
    CHECK(w.timestamps.empty());
  }
  // Labels and originals follow the positions: position 11 sits at index 11 - offset.
  CHECK(s.test[0].labels == std::vector<uint8_t>(11, 0));
  CHECK(s.test[1].labels[10] == 1);
  CHECK(s.test[1].original_items[10] == 500);
  CHECK(s.test[2].labels[9] == 1);
  CHECK(s.test[2].original_items[9] == 500);
  CHECK(s.test[2].original_items[10] == 113);
}

TEST_CASE("windows: the 8:1:1 cut follows target time across users", "[splits]") {
  // max_length 3: user A (len 5) has windows ending at positions 2, 3, 4; B (len 4) at 2, 3;
  // C (len 7) at 2..6. That is 3 + 2 + 5 = 10 windows. Target times:
  //   A: pos2 t=30, pos3 t=55, pos4 t=90
  //   B: pos2 t=35, pos3 t=55 (tie with A pos3: user A first), 
  //   C: pos2 t=10, pos3 t=40, pos4 t=60, pos5 t=70, pos6 t=100
  // Sorted: C2(10) A2(30) B2(35) C3(40) A3(55) B3(55) C4(60) C5(70) | A4(90) | C6(100)
  SequenceSet users = {
      make_user("A", {1, 2, 3, 4, 5}, {1, 2, 30, 55, 90}),
      make_user("B", {6, 7, 8, 9}, {3, 4, 35, 55}),
      make_user("C", {10, 11, 12, 13, 14, 15, 16}, {5, 6, 10, 40, 60, 70, 100}),
  };
  const Splits s = split_windows(users, {3, 0.8, 0.1});
  auto key = [](const Sequence& w) { return w.user_id + std::to_string(w.offset + w.size() - 1); };
  std::vector<std::string> train, valid, test;
  for (const auto& w : s.train) train.push_back(key(w));
  for (const auto& w : s.valid) valid.push_back(key(w));
  for (const auto& w : s.test) test.push_back(key(w));
  CHECK(train == std::vector<std::string>{"C2", "A2", "B2", "C3", "A3", "B3", "C4", "C5"});
  CHECK(valid == std::vector<std::string>{"A4"});
  CHECK(test == std::vector<std::string>{"C6"});
  // Window contents: C's last window is positions 4..6.
  CHECK(s.test[0].items == std::vector<int64_t>{14, 15, 16});
  CHECK(s.test[0].timestamps == std::vector<double>{60, 70, 100});
  CHECK(s.test[0].offset == 4);
  // A's first window is the first three items (positions 0..2).
  CHECK(s.train[1].items == std::vector<int64_t>{1, 2, 3});

  const auto mask = window_test_targets(users, {3, 0.8, 0.1});
  REQUIRE(mask.size() == 3);
  CHECK(mask[0] == std::vector<bool>(5, false));
  CHECK(mask[1] == std::vector<bool>(4, false));
  CHECK(mask[2] == std::vector<bool>{false, false, false, false, false, false, true});
}

TEST_CASE("windows: without timestamps the position stands in for time; n_train and n_valid are floors",
          "[splits]") {
  // Two users of length 4 with max_length 2: windows ending at positions 1, 2, 3 each (6 windows).
  // Order by (position, user): a1 b1 a2 b2 a3 b3. Ratios 0.5 / 0.34: floor(3) = 3 train,
  // floor(2.04) = 2 valid, 1 test.
  SequenceSet users = {make_user("a", {1, 2, 3, 4}), make_user("b", {5, 6, 7, 8})};
  const Splits s = split_windows(users, {2, 0.5, 0.34});
  REQUIRE(s.train.size() == 3);
  REQUIRE(s.valid.size() == 2);
  REQUIRE(s.test.size() == 1);
  CHECK(s.train[0].items == std::vector<int64_t>{1, 2});
  CHECK(s.train[1].items == std::vector<int64_t>{5, 6});
  CHECK(s.train[2].items == std::vector<int64_t>{2, 3});
  CHECK(s.valid[0].items == std::vector<int64_t>{6, 7});
  CHECK(s.valid[1].items == std::vector<int64_t>{3, 4});
  CHECK(s.test[0].items == std::vector<int64_t>{7, 8});

  // A ratio whose product is just below an integer in doubles still floors to the intended count:
  // 100 windows * 0.29 = 28.999999999999996.
  SequenceSet many;
  for (int u = 0; u < 100; ++u) many.push_back(make_user(std::to_string(u), {1, 2}));
  const Splits m = split_windows(many, {11, 0.29, 0.1});
  CHECK(m.train.size() == 29);
  CHECK(m.valid.size() == 10);
  CHECK(m.test.size() == 61);
}

TEST_CASE("windows: invalid options and mixed timestamps are errors", "[splits]") {
  SequenceSet users = {make_user("a", {1, 2, 3})};
  CHECK_THROWS_WITH(split_windows(users, {1, 0.8, 0.1}), Catch::Contains("max_length"));
  CHECK_THROWS_WITH(split_windows(users, {11, 0.8, 0.3}), Catch::Contains("ratios"));
  CHECK_THROWS_WITH(split_windows(users, {11, -0.1, 0.1}), Catch::Contains("ratios"));
  SequenceSet mixed = {make_user("a", {1, 2, 3}, {1, 2, 3}), make_user("b", {1, 2})};
  CHECK_THROWS_WITH(split_windows(mixed), Catch::Contains("'b'") && Catch::Contains("timestamps"));
  CHECK_THROWS_AS(window_test_targets(mixed), Error);
}

TEST_CASE("leave-one-out: hand-checked lengths 1, 2, 3 and 5", "[splits]") {
  Sequence five = make_user("five", {1, 2, 3, 4, 5}, {10, 20, 30, 40, 50});
  five.labels = {0, 1, 0, 0, 0};
  five.original_items = {1, 9, 3, 4, 5};
  const SequenceSet users = {make_user("one", {7}), make_user("two", {7, 8}), make_user("three", {1, 2, 3}), five};
  const Splits s = split_leave_one_out(users);
  CHECK(s.protocol == SplitProtocol::kLeaveOneOut);

  // Length 1: nothing. Length 2: train only, whole sequence. Length 3: train would be the lone
  // first item (no history), so only valid and test. Length 5: all three.
  REQUIRE(s.train.size() == 2);
  CHECK(s.train[0].user_id == "two");
  CHECK(s.train[0].items == std::vector<int64_t>{7, 8});
  CHECK(s.train[1].user_id == "five");
  CHECK(s.train[1].items == std::vector<int64_t>{1, 2, 3});
  CHECK(s.train[1].timestamps == std::vector<double>{10, 20, 30});
  CHECK(s.train[1].labels == std::vector<uint8_t>{0, 1, 0});
  CHECK(s.train[1].original_items == std::vector<int64_t>{1, 9, 3});

  REQUIRE(s.valid.size() == 2);
  CHECK(s.valid[0].user_id == "three");
  CHECK(s.valid[0].items == std::vector<int64_t>{1, 2});
  CHECK(s.valid[1].items == std::vector<int64_t>{1, 2, 3, 4});
  CHECK(s.valid[1].target() == 4);

  REQUIRE(s.test.size() == 2);
  CHECK(s.test[0].items == std::vector<int64_t>{1, 2, 3});
  CHECK(s.test[1].items == std::vector<int64_t>{1, 2, 3, 4, 5});
  CHECK(s.test[1].labels == five.labels);
  for (const auto* part : {&s.train, &s.valid, &s.test})
    for (const auto& seq : *part) CHECK(seq.offset == 0);
}
