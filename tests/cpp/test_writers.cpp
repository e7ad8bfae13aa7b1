#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "llm4dsr/data/noise.h"
#include "llm4dsr/data/readers.h"
#include "llm4dsr/data/synthetic.h"
#include "llm4dsr/data/writers.h"
#include "llm4dsr/error.h"
#include "test_support.h"

using namespace llm4dsr;
using llm4dsr::testing::TempDir;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  return out;
}

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Titles that exercise every escaping rule: apostrophes (double-quoted repr), both quote kinds,
// commas, a backslash and a tab, non-ASCII.
Catalog tricky_catalog() {
  Catalog c;
  c.set_title(c.add("208"), "Heat (1995)");
  c.set_title(c.add("3023"), "Schindler's List (1993)");
  c.set_title(c.add("B00X"), "Say \"Hi\", 'Bye'");
  c.set_title(c.add("007"), "Back\\slash\tTab");
  c.set_title(c.add("12"), "Caf\xC3\xA9 \xC3\x9Cn\xC3\xAF" "code");
  return c;
}

Sequence tricky_window() {
  Sequence s;
  s.user_id = "u,1";
  s.items = {1, 2, 3, 5};
  s.labels = {0, 1, 0, 0};
  s.original_items = {1, 4, 3, 5};
  s.timestamps = {1600000000, 1600000000.5, 0.5, 1600003600};
  return s;
}

}  // namespace

TEST_CASE("write_splits_csv writes the authors' layout byte for byte", "[writers]") {
  TempDir dir;
  const Catalog catalog = tricky_catalog();
  Splits splits;
  splits.train.push_back(tricky_window());
  Sequence plain;  // no labels, no timestamps
  plain.user_id = "7";
  plain.items = {2, 1};
  splits.test.push_back(plain);
  const std::string out = dir.file("out");  // created by the writer
  write_splits_csv(splits, catalog, out);
  CHECK(dir_entries(out) == std::vector<std::string>{"id2name.json", "test.csv", "train.csv", "valid.csv"});

  const std::string header = "user_id,item_ids,mask,item_titles,replaced_item_titles,timestamp,original_item_ids\n";
  // Hand-written: Python reprs inside RFC 4180 quoting (inner double quotes doubled).
  const std::string train_row =
      R"x("u,1","[208, 3023, 'B00X', 12]","[0, 1, 0, 0]",)x"
      R"x("['Heat (1995)', ""Schindler's List (1993)"", 'Say ""Hi"", \'Bye\'', 'Café Ünïcode']",)x"
      R"x(['Back\\slash\tTab'],"[1600000000, 1600000000.5, 0.5, 1600003600]","[208, '007', 'B00X', 12]")x"
      "\n";
  CHECK(slurp(out + "/train.csv") == header + train_row);
  CHECK(slurp(out + "/valid.csv") == header);
  CHECK(slurp(out + "/test.csv") ==
        header + R"x(7,"[3023, 208]","[0, 0]","[""Schindler's List (1993)"", 'Heat (1995)']",[],[],"[3023, 208]")x" "\n");

  const auto id2name = nlohmann::ordered_json::parse(slurp(out + "/id2name.json"));
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& [k, v] : id2name.items()) entries.emplace_back(k, v.get<std::string>());
  CHECK(entries == std::vector<std::pair<std::string, std::string>>{
                       {"208", "Heat (1995)"},
                       {"3023", "Schindler's List (1993)"},
                       {"B00X", "Say \"Hi\", 'Bye'"},
                       {"007", "Back\\slash\tTab"},
                       {"12", "Café Ünïcode"}});
}

TEST_CASE("write_splits_csv validates before replacing anything", "[writers]") {
  TempDir dir;
  const Catalog catalog = tricky_catalog();
  Splits good;
  good.train.push_back(tricky_window());
  write_splits_csv(good, catalog, dir.path());
  const std::string before = slurp(dir.file("train.csv"));

  Splits bad = good;
  Sequence out_of_range;
  out_of_range.user_id = "x";
  out_of_range.items = {1, 6};
  bad.test.push_back(out_of_range);
  CHECK_THROWS_WITH(write_splits_csv(bad, catalog, dir.path()), Catch::Contains("'x'") && Catch::Contains("6"));
  Splits nan_time = good;
  nan_time.train[0].timestamps[2] = std::nan("");
  CHECK_THROWS_WITH(write_splits_csv(nan_time, catalog, dir.path()), Catch::Contains("u,1"));
  Splits empty = good;
  empty.valid.push_back(Sequence{});
  CHECK_THROWS_AS(write_splits_csv(empty, catalog, dir.path()), Error);
  // The earlier output is intact and no temporary file is left.
  CHECK(slurp(dir.file("train.csv")) == before);
  CHECK(dir_entries(dir.path()) == std::vector<std::string>{"id2name.json", "test.csv", "train.csv", "valid.csv"});
}

TEST_CASE("write_recbole output parses back to the input", "[writers]") {
  TempDir dir;
  Catalog catalog;
  catalog.set_title(catalog.add("i1"), "Toy Story (1995)");
  catalog.set_title(catalog.add("i2"), "Tab\there\nand newline");
  catalog.add("i3");  // no title
  catalog.set_extra(2, "Comedy Drama");

  SequenceSet seqs(2);
  seqs[0].user_id = "alice";
  seqs[0].items = {1, 2, 3};
  seqs[0].timestamps = {881250949, 881250950.25, 881251000};
  seqs[1].user_id = "bob";
  seqs[1].items = {3, 1};
  seqs[1].offset = 4;  // no timestamps: the position offset + p stands in for time
  write_recbole(seqs, catalog, dir.file("rb"), "toy");
  CHECK(dir_entries(dir.file("rb")) == std::vector<std::string>{"toy.inter", "toy.item"});

  const auto inter = split(slurp(dir.file("rb/toy.inter")), '\n');
  REQUIRE(inter.size() == 7);  // header, 5 rows, trailing empty
  CHECK(inter[0] == "user_id:token\titem_id:token\ttimestamp:float");
  CHECK(inter.back().empty());
  std::vector<std::tuple<std::string, std::string, double>> rows;
  for (size_t i = 1; i + 1 < inter.size(); ++i) {
    const auto f = split(inter[i], '\t');
    REQUIRE(f.size() == 3);
    rows.emplace_back(f[0], f[1], std::stod(f[2]));
  }
  const std::vector<std::tuple<std::string, std::string, double>> expected = {
      {"alice", "i1", 881250949}, {"alice", "i2", 881250950.25}, {"alice", "i3", 881251000},
      {"bob", "i3", 4},           {"bob", "i1", 5}};
  CHECK(rows == expected);
  CHECK(inter[1] == "alice\ti1\t881250949");  // integral timestamps without ".0"

  const auto item = split(slurp(dir.file("rb/toy.item")), '\n');
  REQUIRE(item.size() == 5);
  CHECK(item[0] == "item_id:token\ttitle:token_seq\textra:token_seq");
  CHECK(item[1] == "i1\tToy Story (1995)\t");
  CHECK(item[2] == "i2\tTab here and newline\tComedy Drama");
  CHECK(item[3] == "i3\t\t");

  // Without extra text the column is left out.
  catalog.set_extra(2, "");
  write_recbole(seqs, catalog, dir.file("rb"), "toy");
  CHECK(split(slurp(dir.file("rb/toy.item")), '\n')[0] == "item_id:token\ttitle:token_seq");

  SequenceSet bad = seqs;
  bad[0].user_id = "has\ttab";
  CHECK_THROWS_WITH(write_recbole(bad, catalog, dir.path(), "toy"), Catch::Contains("has\ttab"));
}

TEST_CASE("write_jsonl lines parse back with nlohmann::json", "[writers]") {
  TempDir dir;
  Catalog numeric;
  for (const char* id : {"10", "20", "30"}) numeric.add(id);
  SequenceSet seqs(2);
  seqs[0].user_id = "u1";
  seqs[0].items = {1, 3};
  seqs[0].timestamps = {100, 200.5};
  seqs[0].labels = {1, 0};
  seqs[0].original_items = {2, 3};
  seqs[1].user_id = "u2";
  seqs[1].items = {2};
  const std::string path = dir.file("sub/out.jsonl");
  write_jsonl(seqs, numeric, path);
  const auto lines = split(slurp(path), '\n');
  REQUIRE(lines.size() == 3);
  CHECK(lines[2].empty());
  const auto a = nlohmann::json::parse(lines[0]);
  CHECK(a.at("user_id") == "u1");
  CHECK(a.at("item_ids") == nlohmann::json::array({10, 30}));
  CHECK(a.at("item_ids")[0].is_number_integer());
  CHECK(a.at("timestamps")[0].is_number_integer());
  CHECK(a.at("timestamps") == nlohmann::json::array({100, 200.5}));
  CHECK(a.at("labels") == nlohmann::json::array({1, 0}));
  CHECK(a.at("original_item_ids") == nlohmann::json::array({20, 30}));
  const auto b = nlohmann::json::parse(lines[1]);
  CHECK(b == nlohmann::json::parse(R"({"user_id": "u2", "item_ids": [20]})"));

  // One non-integer external id makes every id a string.
  Catalog mixed;
  for (const char* id : {"10", "B0X", "007"}) mixed.add(id);
  write_jsonl(seqs, mixed, path);
  const auto c = nlohmann::json::parse(split(slurp(path), '\n')[0]);
  CHECK(c.at("item_ids") == nlohmann::json::array({"10", "007"}));
  CHECK(c.at("original_item_ids") == nlohmann::json::array({"B0X", "007"}));
}

TEST_CASE("write_file_atomic replaces content and leaves no temporary file", "[writers]") {
  TempDir dir;
  const std::string path = dir.write("f.txt", "old contents that are longer");
  write_file_atomic(path, "new");
  CHECK(slurp(path) == "new");
  write_file_atomic(path, "");
  CHECK(slurp(path).empty());
  CHECK(dir_entries(dir.path()) == std::vector<std::string>{"f.txt"});

  CHECK_THROWS_WITH(write_file_atomic(dir.file("missing/f.txt"), "x"), Catch::Contains("missing/f.txt"));
  std::filesystem::create_directories(dir.file("adir/inner"));
  CHECK_THROWS_WITH(write_file_atomic(dir.file("adir"), "x"), Catch::Contains("adir"));
  CHECK(std::filesystem::is_directory(dir.file("adir/inner")));
  CHECK(dir_entries(dir.path()) == std::vector<std::string>{"adir", "f.txt"});
}

namespace {

// Every field of every window, in external ids, so two catalogues can be compared.
void check_same_splits(const Splits& a, const Catalog& ca, const Splits& b, const Catalog& cb) {
  const std::pair<const SequenceSet*, const SequenceSet*> parts[] = {
      {&a.train, &b.train}, {&a.valid, &b.valid}, {&a.test, &b.test}};
  for (const auto& [x, y] : parts) {
    REQUIRE(x->size() == y->size());
    for (size_t i = 0; i < x->size(); ++i) {
      const Sequence& s = (*x)[i];
      const Sequence& t = (*y)[i];
      INFO("window " << i << " of user " << s.user_id);
      CHECK(s.user_id == t.user_id);
      REQUIRE(s.size() == t.size());
      // A sequence written without labels reads back all clean, its own originals.
      const std::vector<uint8_t> labels = s.has_labels() ? s.labels : std::vector<uint8_t>(s.items.size(), 0);
      const std::vector<int64_t>& originals = s.has_labels() ? s.original_items : s.items;
      CHECK(t.labels == labels);
      CHECK(t.timestamps == s.timestamps);
      for (int64_t p = 0; p < s.size(); ++p) {
        CHECK(cb.external_id(t.items[p]) == ca.external_id(s.items[p]));
        CHECK(cb.title(t.items[p]) == ca.title(s.items[p]));
        CHECK(cb.external_id(t.original_items[p]) == ca.external_id(originals[p]));
      }
    }
  }
}

}  // namespace

TEST_CASE("write_splits_csv then read_llm4dsr_csv round-trips", "[writers]") {
  SECTION("tricky titles, ids and timestamps") {
    TempDir dir;
    Catalog catalog = tricky_catalog();
    catalog.set_title(catalog.add("[x]"), "Line\nbreak, [brackets] and \x01 control");
    catalog.set_title(catalog.add("99"), "\xE6\x97\xA5\xE6\x9C\xAC \"quoted\" only");
    Splits splits;
    splits.train.push_back(tricky_window());
    Sequence w2;
    w2.user_id = "second \"user\"";
    w2.items = {6, 7, 2};
    w2.labels = {1, 0, 0};
    w2.original_items = {4, 7, 2};
    w2.timestamps = {1, 2, 3};
    splits.valid.push_back(w2);
    Sequence plain;
    plain.user_id = "3";
    plain.items = {7, 6};
    splits.test.push_back(plain);
    write_splits_csv(splits, catalog, dir.path());
    const Dataset back = read_llm4dsr_csv(dir.path());
    REQUIRE(back.splits);
    CHECK(back.format == "llm4dsr-csv");
    CHECK(back.catalog.size() == catalog.size());
    for (int64_t id = 1; id <= catalog.size(); ++id) {
      CHECK(back.catalog.external_id(id) == catalog.external_id(id));
      CHECK(back.catalog.title(id) == catalog.title(id));
    }
    check_same_splits(splits, catalog, *back.splits, back.catalog);
  }
  SECTION("a noisy prepared synthetic dataset") {
    TempDir dir;
    SyntheticOptions so;
    so.num_users = 40;
    so.num_items = 150;
    const Dataset ds = make_synthetic(so);
    PrepareOptions po;
    po.noise_alpha = 0.2;
    po.seed = 3;
    const Splits splits = prepare(ds, po);
    write_splits_csv(splits, ds.catalog, dir.path());
    const Dataset back = read_llm4dsr_csv(dir.path());
    REQUIRE(back.splits);
    check_same_splits(splits, ds.catalog, *back.splits, back.catalog);
  }
}
