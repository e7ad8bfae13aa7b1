#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>

#include "llm4dsr/data/synthetic.h"
#include "llm4dsr/error.h"

using namespace llm4dsr;

TEST_CASE("synthetic: same options give the same dataset; another seed differs", "[synthetic]") {
  SyntheticOptions o;
  o.num_users = 60;
  o.num_items = 200;
  const Dataset a = make_synthetic(o);
  const Dataset b = make_synthetic(o);
  REQUIRE(a.catalog.size() == b.catalog.size());
  for (int64_t id = 1; id <= a.catalog.size(); ++id) {
    CHECK(a.catalog.title(id) == b.catalog.title(id));
    CHECK(a.catalog.extra(id) == b.catalog.extra(id));
  }
  REQUIRE(a.users.size() == b.users.size());
  for (size_t u = 0; u < a.users.size(); ++u) {
    CHECK(a.users[u].items == b.users[u].items);
    CHECK(a.users[u].timestamps == b.users[u].timestamps);
  }

  o.seed = 2025;
  const Dataset c = make_synthetic(o);
  int64_t same_titles = 0, same_users = 0;
  for (int64_t id = 1; id <= a.catalog.size(); ++id) same_titles += a.catalog.title(id) == c.catalog.title(id);
  for (size_t u = 0; u < a.users.size(); ++u) same_users += a.users[u].items == c.users[u].items;
  CHECK(same_titles < a.catalog.size() / 2);
  CHECK(same_users == 0);

  // The catalogue does not depend on the number of users, and earlier users not on later ones.
  SyntheticOptions fewer = o;
  fewer.num_users = 10;
  const Dataset d = make_synthetic(fewer);
  for (int64_t id = 1; id <= c.catalog.size(); ++id) CHECK(d.catalog.title(id) == c.catalog.title(id));
  for (size_t u = 0; u < d.users.size(); ++u) CHECK(d.users[u].items == c.users[u].items);
}

TEST_CASE("synthetic: sizes, metadata, unique titles, timestamps, popularity", "[synthetic]") {
  SyntheticOptions o;
  o.num_users = 123;
  o.num_items = 457;
  o.min_length = 5;
  o.max_length = 9;
  const Dataset ds = make_synthetic(o);
  CHECK(ds.name == "synthetic");
  CHECK(ds.format == "synthetic");
  CHECK(ds.has_timestamps);
  CHECK(!ds.splits);
  CHECK(ds.catalog.size() == 457);
  CHECK(ds.users.size() == 123);

  const auto genres = synthetic_genres();
  CHECK(genres.size() >= 8);
  const std::set<std::string> genre_set(genres.begin(), genres.end());
  std::set<std::string> titles;
  std::map<std::string, int64_t> per_genre;
  for (int64_t id = 1; id <= ds.catalog.size(); ++id) {
    CHECK(ds.catalog.external_id(id) == std::to_string(id));
    CHECK(!ds.catalog.title(id).empty());
    titles.insert(ds.catalog.title(id));
    CHECK(genre_set.count(ds.catalog.extra(id)) == 1);
    ++per_genre[ds.catalog.extra(id)];
  }
  CHECK(titles.size() == 457);  // unique
  // Items spread evenly: 457 over the genres differ by at most one.
  int64_t lo = INT64_MAX, hi = 0;
  for (const auto& g : genres) {
    lo = std::min(lo, per_genre[g]);
    hi = std::max(hi, per_genre[g]);
  }
  CHECK(hi - lo <= 1);

  std::vector<int64_t> counted(ds.catalog.size() + 1, 0);
  std::set<int64_t> lengths;
  std::set<std::string> user_ids;
  double earliest_end = 1e300, latest_start = 0;
  for (const auto& s : ds.users) {
    s.validate(ds.catalog.size());
    user_ids.insert(s.user_id);
    CHECK(s.size() >= 5);
    CHECK(s.size() <= 9);
    lengths.insert(s.size());
    REQUIRE(s.timestamps.size() == s.items.size());
    CHECK(s.timestamps[0] >= 1.6e9);
    for (int64_t p = 1; p < s.size(); ++p) {
      CHECK(s.timestamps[p] > s.timestamps[p - 1]);
      CHECK(s.timestamps[p] == std::floor(s.timestamps[p]));
    }
    // A user does not repeat a title.
    CHECK(std::set<int64_t>(s.items.begin(), s.items.end()).size() == s.items.size());
    for (int64_t id : s.items) ++counted[id];
    earliest_end = std::min(earliest_end, s.timestamps.back());
    latest_start = std::max(latest_start, s.timestamps.front());
  }
  CHECK(user_ids.size() == 123);
  CHECK(lengths == std::set<int64_t>{5, 6, 7, 8, 9});
  CHECK(latest_start > earliest_end);  // users do not all run in lockstep
  for (int64_t id = 1; id <= ds.catalog.size(); ++id) CHECK(ds.catalog.popularity(id) == counted[id]);
}

TEST_CASE("synthetic: users follow at most two genres; popularity is skewed", "[synthetic]") {
  const Dataset ds = make_synthetic({});  // defaults: 300 users, 600 items
  double share_sum = 0;
  for (const auto& s : ds.users) {
    std::map<std::string, int64_t> count;
    for (int64_t id : s.items) ++count[ds.catalog.extra(id)];
    std::vector<int64_t> c;
    for (const auto& kv : count) c.push_back(kv.second);
    std::sort(c.rbegin(), c.rend());
    const int64_t top2 = c[0] + (c.size() > 1 ? c[1] : 0);
    share_sum += static_cast<double>(top2) / s.size();
  }
  const double mean_share = share_sum / ds.users.size();
  CHECK(mean_share >= 0.9);

  // Without off-genre picks every user stays inside at most two genres.
  SyntheticOptions strict;
  strict.off_genre_rate = 0.0;
  const Dataset focused = make_synthetic(strict);
  int64_t two_genre_users = 0;
  for (const auto& s : focused.users) {
    std::set<std::string> g;
    for (int64_t id : s.items) g.insert(focused.catalog.extra(id));
    CHECK(g.size() <= 2);
    two_genre_users += g.size() == 2;
  }
  CHECK(two_genre_users > 0);

  // 600 items over 10 genres: 60 each.
  int64_t horror = 0;
  for (int64_t id = 1; id <= ds.catalog.size(); ++id) horror += ds.catalog.extra(id) == "Horror";
  CHECK(horror == 60);

  // Skew: the most popular decile of items takes far more than a tenth of the interactions.
  std::vector<int64_t> pop(ds.catalog.popularity().begin() + 1, ds.catalog.popularity().end());
  std::sort(pop.rbegin(), pop.rend());
  int64_t total = 0, top = 0;
  for (size_t i = 0; i < pop.size(); ++i) {
    total += pop[i];
    if (i < pop.size() / 10) top += pop[i];
  }
  CHECK(static_cast<double>(top) / total > 0.25);
}

TEST_CASE("synthetic: option errors name the limit", "[synthetic]") {
  SyntheticOptions o;
  o.num_items = 1000000;
  CHECK_THROWS_WITH(make_synthetic(o), Catch::Contains("maximum items"));
  // The maximum is exact: asking for it works and uses every title.
  std::string message;
  try {
    make_synthetic(o);
  } catch (const Error& e) {
    message = e.what();
  }
  const auto pos = message.find("maximum items = ");
  REQUIRE(pos != std::string::npos);
  const int64_t maximum = std::stoll(message.substr(pos + 16));
  CHECK(maximum >= 3000);
  o.num_items = maximum;
  o.num_users = 3;
  CHECK(make_synthetic(o).catalog.size() == maximum);
  o.num_items = maximum + 1;
  CHECK_THROWS_AS(make_synthetic(o), Error);

  SyntheticOptions bad;
  bad.min_length = 10;
  bad.max_length = 5;
  CHECK_THROWS_WITH(make_synthetic(bad), Catch::Contains("min_length"));
  bad = {};
  bad.off_genre_rate = 1.5;
  CHECK_THROWS_WITH(make_synthetic(bad), Catch::Contains("off_genre_rate"));
  bad = {};
  bad.num_items = 3;
  CHECK_THROWS_WITH(make_synthetic(bad), Catch::Contains("items"));
}

TEST_CASE("synthetic: spec parsing", "[synthetic]") {
  const SyntheticOptions d = parse_synthetic_spec("synthetic");
  const SyntheticOptions defaults;
  CHECK(d.num_users == defaults.num_users);
  CHECK(d.num_items == defaults.num_items);
  CHECK(d.seed == defaults.seed);

  const SyntheticOptions o =
      parse_synthetic_spec("synthetic:users=50, items=120,min_length=4,max_length=8,seed=7,off_genre_rate=0.1");
  CHECK(o.num_users == 50);
  CHECK(o.num_items == 120);
  CHECK(o.min_length == 4);
  CHECK(o.max_length == 8);
  CHECK(o.seed == 7);
  CHECK(o.off_genre_rate == 0.1);
  CHECK(parse_synthetic_spec("synthetic:").num_users == defaults.num_users);

  CHECK_THROWS_WITH(parse_synthetic_spec("synthetic:users=5,colour=red"),
                    Catch::Contains("unknown key 'colour'"));
  CHECK_THROWS_WITH(parse_synthetic_spec("synthetic:users=many"), Catch::Contains("'users'"));
  CHECK_THROWS_WITH(parse_synthetic_spec("synthetic:users=5x"), Catch::Contains("'5x'"));
  CHECK_THROWS_WITH(parse_synthetic_spec("synthetic:users"), Catch::Contains("key=value"));
  CHECK_THROWS_WITH(parse_synthetic_spec("synthetic:seed=1,seed=2"), Catch::Contains("twice"));
  CHECK_THROWS_AS(parse_synthetic_spec("synthetics"), Error);
  CHECK_THROWS_AS(parse_synthetic_spec("movielens"), Error);
  CHECK_THROWS_WITH(parse_synthetic_spec("synthetic:min_length=9,max_length=3"), Catch::Contains("min_length"));
}
