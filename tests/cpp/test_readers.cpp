// Readers: RecBole atomic files, raw MovieLens-100K, Amazon JSON, the LLM4DSR authors' CSV
// windows, format detection, and the internal text helpers they are built on.
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>

#include "internal/csv_reader.h"
#include "internal/python_literal.h"
#include "internal/text_io.h"
#include "llm4dsr/data/readers.h"
#include "llm4dsr/error.h"
#include "test_support.h"

using Catch::Matchers::Contains;
using llm4dsr::testing::shared_data_dir;
using llm4dsr::testing::TempDir;
namespace li = llm4dsr::internal;

namespace {

std::vector<std::string> external_items(const llm4dsr::Dataset& d, const llm4dsr::Sequence& s) {
  std::vector<std::string> out;
  for (int64_t id : s.items) out.push_back(d.catalog.external_id(id));
  return out;
}

std::vector<std::string> external_ids(const llm4dsr::Catalog& c, const std::vector<int64_t>& ids) {
  std::vector<std::string> out;
  for (int64_t id : ids) out.push_back(c.external_id(id));
  return out;
}

using Strings = std::vector<std::string>;

// A valid RecBole pair; tests overwrite one file to make it malformed.
const char* kInter =
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "u2\ti3\t4\t300\n"
    "u1\ti1\t5\t200\n"
    "u1\ti2\t3\t100\n"
    "u2\ti1\t2\t300\n"
    "u1\ti4\t1\t200\n";
const char* kItem =
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "i2\tHeat\t1995\tAction Crime\n"
    "i1\tToy Story\t1995\tAnimation Comedy\n"
    "i9\tUnseen\t2000\tDrama\n";

}  // namespace

// ------------------------------------------------------------------------------------------------
// Internal helpers

TEST_CASE("UTF-8 validation finds the first malformed byte and names line and byte", "[readers]") {
  CHECK_FALSE(li::find_invalid_utf8("plain ascii").has_value());
  CHECK_FALSE(li::find_invalid_utf8("Mis\xC3\xA9rables \xE2\x82\xAC \xF0\x9F\x8E\xAC").has_value());
  CHECK(li::find_invalid_utf8("ab\xE9" "cd") == 2u);            // Latin-1 e-acute
  CHECK(li::find_invalid_utf8("\xC0\x80") == 0u);               // overlong NUL
  CHECK(li::find_invalid_utf8("x\xE0\x80\xAF") == 1u);          // overlong 3-byte
  CHECK(li::find_invalid_utf8("\xED\xA0\x80") == 0u);           // UTF-16 surrogate
  CHECK(li::find_invalid_utf8("ok\xF4\x90\x80\x80") == 2u);     // above U+10FFFF
  CHECK(li::find_invalid_utf8("ok\xE2\x82") == 2u);             // truncated at the end
  CHECK(li::find_invalid_utf8("\x80") == 0u);                   // stray continuation byte
  REQUIRE_THROWS_WITH(li::check_utf8("first\nsecond line\nab\xE9z\n", "f.txt"),
                      Contains("f.txt: not valid UTF-8 at line 3, byte 3 (0xE9)"));
  REQUIRE_THROWS_WITH(li::check_utf8("\xFFz", "g.txt"), Contains("g.txt: not valid UTF-8 at line 1, byte 1 (0xFF)"));
}

TEST_CASE("Latin-1 decodes byte by byte into UTF-8", "[readers]") {
  CHECK(li::latin1_to_utf8("Mis\xE9rables") == "Mis\xC3\xA9rables");
  CHECK(li::latin1_to_utf8("\xFF\x7F\xA0") == "\xC3\xBF\x7F\xC2\xA0");
  CHECK(li::latin1_to_utf8("") == "");
}

TEST_CASE("LineReader handles CRLF, a missing final newline and a byte order mark", "[readers]") {
  li::LineReader lines("\xEF\xBB\xBF" "a\r\nb\n\nc");
  std::string_view line;
  std::vector<std::pair<int64_t, std::string>> got;
  while (lines.next(line)) got.emplace_back(lines.line_number(), std::string(line));
  CHECK(got == std::vector<std::pair<int64_t, std::string>>{{1, "a"}, {2, "b"}, {3, ""}, {4, "c"}});
}

TEST_CASE("number parsing is strict", "[readers]") {
  CHECK(li::parse_int64("42") == 42);
  CHECK(li::parse_int64(" -7 ") == -7);
  CHECK_FALSE(li::parse_int64("4x").has_value());
  CHECK_FALSE(li::parse_int64("").has_value());
  CHECK_FALSE(li::parse_int64("1.5").has_value());
  CHECK(li::parse_double("881250949") == 881250949.0);
  CHECK(li::parse_double("1.5e3") == 1500.0);
  CHECK(li::parse_double(".5") == 0.5);
  CHECK_FALSE(li::parse_double("12:30").has_value());
  CHECK_FALSE(li::parse_double("nan").has_value());
  CHECK_FALSE(li::parse_double("inf").has_value());
}

TEST_CASE("CSV reader: quotes, doubled quotes, multi-line fields, CRLF, line numbers", "[readers]") {
  const std::string text =
      "a,b,c\r\n"
      "1,\"x, y\",\"say \"\"hi\"\"\"\r\n"
      "2,\"line one\nline two\",\n"
      "\n"
      "3,plain,\"\"\n";
  const auto records = li::parse_csv(text, "t.csv");
  REQUIRE(records.size() == 4);
  CHECK(records[0].fields == Strings{"a", "b", "c"});
  CHECK(records[1].fields == Strings{"1", "x, y", "say \"hi\""});
  CHECK(records[1].line == 2);
  CHECK(records[2].fields == Strings{"2", "line one\nline two", ""});
  CHECK(records[2].line == 3);
  CHECK(records[3].fields == Strings{"3", "plain", ""});
  CHECK(records[3].line == 6);  // line 5 is blank, skipped
  REQUIRE_THROWS_WITH(li::parse_csv("a,b\n1,\"open\n\n", "u.csv"), Contains("u.csv:2: unterminated quoted field"));
  REQUIRE_THROWS_WITH(li::parse_csv("a,b\n1,\"q\"x\n", "v.csv"), Contains("v.csv:2: unexpected character 'x'"));
}

TEST_CASE("Python list literals: ints, both quote styles, escapes", "[readers]") {
  const auto ints = li::parse_python_list("[208, 3023,-5 ,]", "w");
  REQUIRE(ints.size() == 3);
  CHECK(ints[0].kind == li::PyValue::Kind::kInt);
  CHECK(ints[0].text == "208");
  CHECK(ints[2].text == "-5");
  CHECK(li::parse_python_list("[]", "w").empty());
  CHECK(li::parse_python_list("  [ ]  ", "w").empty());
  const auto floats = li::parse_python_list("[1.5, 2e3]", "w");
  CHECK(floats[0].kind == li::PyValue::Kind::kFloat);
  CHECK(floats[1].text == "2e3");

  const auto s = li::parse_python_list(
      R"(['Heat (1995)', "Schindler's List", 'Say \'hi\', "bye"', 'a\\b', 'tab\there\nnl', '\xe9t\xe9', '\u00e9\U0001F3AC', 'keep\q', 'oct\101'])",
      "w");
  REQUIRE(s.size() == 9);
  CHECK(s[0].kind == li::PyValue::Kind::kString);
  CHECK(s[0].text == "Heat (1995)");
  CHECK(s[1].text == "Schindler's List");
  CHECK(s[2].text == "Say 'hi', \"bye\"");
  CHECK(s[3].text == "a\\b");
  CHECK(s[4].text == "tab\there\nnl");
  CHECK(s[5].text == "\xC3\xA9t\xC3\xA9");  // \xNN is a code point, not a byte
  CHECK(s[6].text == "\xC3\xA9\xF0\x9F\x8E\xAC");
  CHECK(s[7].text == "keep\\q");  // Python keeps unknown escapes
  CHECK(s[8].text == "octA");
  // UTF-8 passes through unescaped.
  CHECK(li::parse_python_list("['Am\xC3\xA9lie']", "w")[0].text == "Am\xC3\xA9lie");

  REQUIRE_THROWS_WITH(li::parse_python_list("[1 2]", "f.csv:3, column mask"),
                      Contains("f.csv:3, column mask: expected ',' or ']'") && Contains("character 4"));
  REQUIRE_THROWS_WITH(li::parse_python_list("['open]", "here"), Contains("here: expected a closing '"));
  REQUIRE_THROWS_WITH(li::parse_python_list("1, 2", "here"), Contains("expected '[' opening the list"));
  REQUIRE_THROWS_WITH(li::parse_python_list("[abc]", "here"), Contains("expected a number or a quoted string"));
  REQUIRE_THROWS_WITH(li::parse_python_list("[1] x", "here"), Contains("the end of the field"));
  REQUIRE_THROWS_WITH(li::parse_python_list("['\\ud800']", "here"), Contains("Unicode scalar value"));
}

TEST_CASE("python_repr quotes like Python 3 and round-trips through the parser", "[readers]") {
  CHECK(li::python_repr("Heat") == "'Heat'");
  CHECK(li::python_repr("Schindler's List") == "\"Schindler's List\"");
  CHECK(li::python_repr("both ' and \"") == "'both \\' and \"'");
  CHECK(li::python_repr("a\\b\n\t\x01\x7f") == "'a\\\\b\\n\\t\\x01\\x7f'");
  CHECK(li::python_repr("Am\xC3\xA9lie") == "'Am\xC3\xA9lie'");
  for (const std::string t : {"x", "it's", "say \"hi\"", "both ' \"", "back\\slash", "nl\nx\r\x1f", "[a, b]", ""}) {
    const auto back = li::parse_python_list("[" + li::python_repr(t) + "]", "rt");
    REQUIRE(back.size() == 1);
    CHECK(back[0].text == t);
  }
}

// ------------------------------------------------------------------------------------------------
// RecBole

TEST_CASE("RecBole: catalogue order, titles, stable time order, users by first appearance", "[readers]") {
  TempDir dir;
  dir.write("toy.inter", kInter);
  dir.write("toy.item", kItem);
  llm4dsr::ReadOptions options;
  options.extra_field = "class";
  const auto d = llm4dsr::read_recbole(dir.path(), options);
  CHECK(d.name == "toy");
  CHECK(d.format == "recbole");
  CHECK(d.has_timestamps);
  REQUIRE(d.catalog.size() == 5);
  // .item order first, then items only seen in .inter in order of appearance.
  CHECK(external_ids(d.catalog, {1, 2, 3, 4, 5}) == Strings{"i2", "i1", "i9", "i3", "i4"});
  CHECK(d.catalog.title(1) == "Heat");
  CHECK(d.catalog.title(2) == "Toy Story");
  CHECK(d.catalog.extra(1) == "Action Crime");
  CHECK(d.catalog.title(4) == "");
  CHECK(d.catalog.popularity() == std::vector<int64_t>{0, 1, 2, 0, 1, 1});
  REQUIRE(d.users.size() == 2);
  CHECK(d.users[0].user_id == "u2");
  // Equal timestamps keep file order.
  CHECK(external_items(d, d.users[0]) == Strings{"i3", "i1"});
  CHECK(d.users[0].timestamps == std::vector<double>{300, 300});
  CHECK(d.users[1].user_id == "u1");
  CHECK(external_items(d, d.users[1]) == Strings{"i2", "i1", "i4"});
  CHECK(d.users[1].timestamps == std::vector<double>{100, 200, 200});
  CHECK_FALSE(d.users[1].has_labels());

  // The same through a file path and through read_dataset's auto-detection; no extra by default.
  const auto f = llm4dsr::read_dataset(dir.file("toy.inter"));
  CHECK(f.format == "recbole");
  CHECK(f.catalog.extra(1) == "");
  CHECK(external_items(f, f.users[1]) == Strings{"i2", "i1", "i4"});
}

TEST_CASE("RecBole: without a timestamp column the file order is the time order", "[readers]") {
  TempDir dir;
  dir.write("x.inter",
            "item_id:token\tuser_id:token\n"  // columns are found by name, in any order
            "b\t1\n"
            "a\t1\n"
            "c\t2\n"
            "a\t2\n");
  const auto d = llm4dsr::read_recbole(dir.file("x.inter"));
  CHECK_FALSE(d.has_timestamps);
  REQUIRE(d.users.size() == 2);
  CHECK(external_items(d, d.users[0]) == Strings{"b", "a"});
  CHECK(external_items(d, d.users[1]) == Strings{"c", "a"});
  CHECK(d.users[0].timestamps.empty());
  CHECK(d.catalog.title(1) == "");  // no .item file
}

TEST_CASE("RecBole: title and extra fields can be chosen", "[readers]") {
  TempDir dir;
  dir.write("x.inter", "user_id:token\titem_id:token\n1\ta\n");
  dir.write("x.item", "item_id:token\tname:token_seq\ttitle:token_seq\tcategories:token_seq\na\tThe Name\tThe Title\tLipstick\n");
  auto d = llm4dsr::read_recbole(dir.path());
  CHECK(d.catalog.title(1) == "The Title");  // "title" comes before "name" in the default order
  llm4dsr::ReadOptions options;
  options.title_field = "name";
  options.extra_field = "categories";
  d = llm4dsr::read_recbole(dir.path(), options);
  CHECK(d.catalog.title(1) == "The Name");
  CHECK(d.catalog.extra(1) == "Lipstick");
  options.title_field = "movie_title";
  REQUIRE_THROWS_WITH(llm4dsr::read_recbole(dir.path(), options),
                      Contains("x.item:1: no column 'movie_title'") && Contains("name:token_seq"));
  options.title_field = "";
  options.extra_field = "genre";
  REQUIRE_THROWS_WITH(llm4dsr::read_recbole(dir.path(), options), Contains("x.item:1: no column 'genre'"));
}

TEST_CASE("RecBole: malformed input names file and line", "[readers]") {
  TempDir dir;
  const std::string inter = dir.file("bad.inter");
  auto read = [&] { return llm4dsr::read_recbole(inter); };
  const std::string header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n";

  dir.write("bad.inter", header + "1\t2\t3\t4\n1\t2\t3\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter:3: truncated line") && Contains("expected 4") && Contains("found 3"));
  dir.write("bad.inter", header + "1\t2\t3\t4\t5\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter:2: expected 4 tab-separated fields"));
  dir.write("bad.inter", "user_id:token\trating:float\n1\t3\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter:1: header has no 'item_id' column"));
  dir.write("bad.inter", "item_id:token\trating:float\n1\t3\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter:1: header has no 'user_id' column"));
  dir.write("bad.inter", "user_id\titem_id:token\n1\t2\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter:1: header field 'user_id' has no type suffix"));
  dir.write("bad.inter", "user_id:token\titem_id:int\n1\t2\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter:1: header field 'item_id:int' has type 'int'"));
  dir.write("bad.inter", "user_id:float\titem_id:token\n1\t2\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter:1: column 'user_id' has type 'float'"));
  dir.write("bad.inter", "user_id:token\titem_id:token\ttimestamp:token\n1\t2\t3\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter:1: column 'timestamp' has type 'token'"));
  dir.write("bad.inter", header + "1\t2\t3\t4\n\n1\t2\t3\t12:30\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter:4: timestamp '12:30' is not a number"));
  dir.write("bad.inter", "");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter: empty file"));
  dir.write("bad.inter", "\n\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter: empty file"));
  dir.write("bad.inter", header);
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter: no interactions"));
  dir.write("bad.inter", header + "1\t2\t3\t4\n1\tMis\xE9rables\t3\t4\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter: not valid UTF-8 at line 3, byte 6 (0xE9)"));
  dir.write("bad.inter", header + "1\t\t3\t4\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.inter:2: empty item_id"));

  dir.write("bad.inter", header + "1\t2\t3\t4\n");
  dir.write("bad.item", "item_id:token\tmovie_title:token_seq\n2\tTwo\n3\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.item:3: truncated line"));
  dir.write("bad.item", "item_id:token\tmovie_title:token_seq\n2\tTwo\n2\tAgain\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.item:3: item_id '2' is listed twice"));
  dir.write("bad.item", "movie_title:token_seq\nTwo\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.item:1: header has no 'item_id' column"));
  dir.write("bad.item", "item_id:token\tmovie_title:token_seq\n2\tCaf\xE9\n");
  REQUIRE_THROWS_WITH(read(), Contains("bad.item: not valid UTF-8 at line 2, byte 6"));

  REQUIRE_THROWS_WITH(llm4dsr::read_recbole(dir.file("missing.inter")),
                      Contains("missing.inter") && Contains("no such file"));
  TempDir empty;
  REQUIRE_THROWS_WITH(llm4dsr::read_recbole(empty.path()), Contains("no .inter file in folder"));
  TempDir two;
  two.write("a.inter", header);
  two.write("b.inter", header);
  REQUIRE_THROWS_WITH(llm4dsr::read_recbole(two.path()), Contains("a.inter, b.inter"));
}

// ------------------------------------------------------------------------------------------------
// MovieLens-100K raw

namespace {
std::string ml_item_line(int id, const std::string& title, std::vector<int> genres) {
  std::string line = std::to_string(id) + "|" + title + "|01-Jan-1995||http://example.org/" + std::to_string(id);
  for (int g = 0; g < 19; ++g)
    line += std::find(genres.begin(), genres.end(), g) != genres.end() ? "|1" : "|0";
  return line + "\n";
}
}  // namespace

TEST_CASE("MovieLens raw: Latin-1 titles, genre names, stable time order", "[readers]") {
  TempDir dir;
  dir.write("u.item", ml_item_line(1, "Toy Story (1995)", {3, 4, 5}) + ml_item_line(2, "Mis\xE9rables, Les (1995)", {8, 12}) +
                          ml_item_line(3, "unknown", {}));
  dir.write("u.data",
            "7\t2\t4\t500\n"
            "9\t1\t3\t100\n"
            "7\t1\t5\t400\n"
            "7\t5\t5\t500\n"  // item 5 is not in u.item
            "9\t2\t1\t50\n");
  const auto d = llm4dsr::read_movielens(dir.path());
  CHECK(d.format == "movielens");
  CHECK(d.name == llm4dsr::internal::base_name(dir.path()));
  CHECK(d.has_timestamps);
  REQUIRE(d.catalog.size() == 4);
  CHECK(external_ids(d.catalog, {1, 2, 3, 4}) == Strings{"1", "2", "3", "5"});
  CHECK(d.catalog.title(1) == "Toy Story (1995)");
  CHECK(d.catalog.title(2) == "Mis\xC3\xA9rables, Les (1995)");
  CHECK(d.catalog.extra(1) == "Animation, Children's, Comedy");
  CHECK(d.catalog.extra(2) == "Drama, Musical");
  CHECK(d.catalog.extra(3) == "");
  CHECK(d.catalog.title(4) == "");
  CHECK(d.catalog.popularity() == std::vector<int64_t>{0, 2, 2, 0, 1});
  REQUIRE(d.users.size() == 2);
  CHECK(d.users[0].user_id == "7");
  CHECK(external_items(d, d.users[0]) == Strings{"1", "2", "5"});  // 400, then the 500 tie in file order
  CHECK(d.users[0].timestamps == std::vector<double>{400, 500, 500});
  CHECK(d.users[1].user_id == "9");
  CHECK(external_items(d, d.users[1]) == Strings{"2", "1"});

  // A u.item already converted to UTF-8 is not decoded twice.
  dir.write("u.item", ml_item_line(1, "Mis\xC3\xA9rables", {0}));
  CHECK(llm4dsr::read_movielens(dir.path()).catalog.title(1) == "Mis\xC3\xA9rables");
  CHECK(llm4dsr::read_dataset(dir.file("u.data")).format == "movielens");
}

TEST_CASE("MovieLens raw: malformed input names file and line", "[readers]") {
  TempDir dir;
  auto read = [&] { return llm4dsr::read_movielens(dir.path()); };
  const std::string items = ml_item_line(1, "A", {1}) + ml_item_line(2, "B", {2});
  dir.write("u.item", items);
  dir.write("u.data", "1\t1\t5\t10\n1\t2\t5\n");
  REQUIRE_THROWS_WITH(read(), Contains("u.data:2: truncated line") && Contains("found 3"));
  dir.write("u.data", "1\t1\t5\t10\nabc\t2\t5\t11\n");
  REQUIRE_THROWS_WITH(read(), Contains("u.data:2: user id 'abc' is not an integer"));
  dir.write("u.data", "1\t1\t5\t10\n1\tB2\t5\t11\n");
  REQUIRE_THROWS_WITH(read(), Contains("u.data:2: item id 'B2' is not an integer"));
  dir.write("u.data", "1\t1\t5\tyesterday\n");
  REQUIRE_THROWS_WITH(read(), Contains("u.data:1: timestamp 'yesterday' is not a number"));
  dir.write("u.data", "");
  REQUIRE_THROWS_WITH(read(), Contains("u.data: empty file"));
  dir.write("u.data", "1\t1\t5\t10\n");
  dir.write("u.item", items + "3|Short|01-Jan-1995\n");
  REQUIRE_THROWS_WITH(read(), Contains("u.item:3: truncated line") && Contains("found 3"));
  std::string bad_flag = ml_item_line(3, "C", {});
  bad_flag.replace(bad_flag.size() - 2, 1, "x");
  dir.write("u.item", items + bad_flag);
  REQUIRE_THROWS_WITH(read(), Contains("u.item:3: genre flag 19 (Western) is 'x'"));
  dir.write("u.item", items + ml_item_line(1, "Again", {}));
  REQUIRE_THROWS_WITH(read(), Contains("u.item:3: movie id 1 is listed twice"));
  dir.write("u.item", "");
  REQUIRE_THROWS_WITH(read(), Contains("u.item: empty file"));
  std::filesystem::remove(dir.file("u.item"));
  REQUIRE_THROWS_WITH(read(), Contains("u.item") && Contains("no such file"));
  dir.write("u.item", items);
  std::filesystem::remove(dir.file("u.data"));
  REQUIRE_THROWS_WITH(read(), Contains("u.data") && Contains("no such file"));
  REQUIRE_THROWS_WITH(llm4dsr::read_movielens(dir.file("nowhere")), Contains("nowhere") && Contains("does not exist"));
}

// ------------------------------------------------------------------------------------------------
// Amazon JSON

TEST_CASE("Amazon JSON: catalogue in id order, titles by ASIN, users in file order", "[readers]") {
  TempDir dir;
  dir.write("id_map.json", R"({"B0C": 3, "B0A": 1, "B0B": 2, "B0D": 4})");
  dir.write("title_map.json", "{\"B0A\": \"Lip Balm\", \"B0C\": \"Caf\xC3\xA9 Soap\", \"B0D\": \" Spaced \"}");
  dir.write("seqs.json", R"({"user9": [3, 1, 3], "user0": [2], "user5": [4, 2]})");
  const auto d = llm4dsr::read_amazon_json(dir.path());
  CHECK(d.format == "amazon-json");
  CHECK_FALSE(d.has_timestamps);
  REQUIRE(d.catalog.size() == 4);
  for (int64_t id = 1; id <= 4; ++id) CHECK(d.catalog.external_id(id) == std::to_string(id));
  CHECK(d.catalog.title(1) == "Lip Balm");
  CHECK(d.catalog.title(2) == "");
  CHECK(d.catalog.title(3) == "Caf\xC3\xA9 Soap");
  CHECK(d.catalog.title(4) == "Spaced");
  CHECK(d.catalog.popularity() == std::vector<int64_t>{0, 1, 2, 2, 1});
  REQUIRE(d.users.size() == 3);
  CHECK(d.users[0].user_id == "user9");  // file order, not key order
  CHECK(d.users[0].items == std::vector<int64_t>{3, 1, 3});
  CHECK(d.users[0].timestamps.empty());
  CHECK(d.users[1].user_id == "user0");
  CHECK(d.users[2].user_id == "user5");
  CHECK(d.users[2].items == std::vector<int64_t>{4, 2});
  CHECK(llm4dsr::read_dataset(dir.path()).users.size() == 3);
  CHECK(llm4dsr::read_dataset(dir.file("seqs.json")).users.size() == 3);

  // Ids need not start at 1: internal ids follow the id order.
  TempDir sparse;
  sparse.write("id_map.json", R"({"X": 10, "Y": 0})");
  sparse.write("title_map.json", "{}");
  sparse.write("s.json", R"({"u": [10, 0]})");
  const auto s = llm4dsr::read_amazon_json(sparse.path());
  CHECK(external_ids(s.catalog, {1, 2}) == Strings{"0", "10"});
  CHECK(s.users[0].items == std::vector<int64_t>{2, 1});
}

TEST_CASE("Amazon JSON: malformed input names the file and the JSON key", "[readers]") {
  TempDir dir;
  auto read = [&](const std::string& seqs = "seqs.json") {
    llm4dsr::ReadOptions o;
    o.sequences_file = seqs;
    return llm4dsr::read_amazon_json(dir.path(), o);
  };
  dir.write("id_map.json", R"({"B0A": 1, "B0B": 2})");
  dir.write("title_map.json", R"({"B0A": "A"})");
  dir.write("seqs.json", R"({"u0": [1, 2], "u1": [2, 7]})");
  REQUIRE_THROWS_WITH(read(), Contains("seqs.json: key \"u1\", index 1: item id 7 is not in") && Contains("id_map.json"));
  dir.write("seqs.json", R"({"u0": [1, "2"]})");
  REQUIRE_THROWS_WITH(read(), Contains("seqs.json: key \"u0\", index 1: expected an integer item id, found string"));
  dir.write("seqs.json", R"({"u0": [1, 2.5]})");
  REQUIRE_THROWS_WITH(read(), Contains("key \"u0\", index 1: expected an integer item id"));
  dir.write("seqs.json", R"({"u0": [1], "u1": []})");
  REQUIRE_THROWS_WITH(read(), Contains("seqs.json: key \"u1\": empty sequence"));
  dir.write("seqs.json", R"({"u0": 1})");
  REQUIRE_THROWS_WITH(read(), Contains("key \"u0\": expected a list of item ids"));
  dir.write("seqs.json", R"([[1, 2]])");
  REQUIRE_THROWS_WITH(read(), Contains("seqs.json: expected a JSON object"));
  dir.write("seqs.json", "{\"u0\": [1],\n \"u1\": [2,]\n}");
  REQUIRE_THROWS_WITH(read(), Contains("seqs.json:2: invalid JSON"));
  dir.write("seqs.json", "{\"u0\": [1],\n\"u\xE9\": [2]}");
  REQUIRE_THROWS_WITH(read(), Contains("seqs.json: not valid UTF-8 at line 2, byte 3"));
  dir.write("seqs.json", R"({"u0": [1], "u0": [2]})");
  REQUIRE_THROWS_WITH(read(), Contains("seqs.json: key \"u0\" appears more than once"));
  dir.write("seqs.json", "");
  REQUIRE_THROWS_WITH(read(), Contains("seqs.json: empty file"));
  dir.write("seqs.json", R"({"u0": [1, 2]})");

  dir.write("title_map.json", R"({"B0A": "A", "B0Z": "Z"})");
  REQUIRE_THROWS_WITH(read(), Contains("title_map.json: key \"B0Z\" is not in") && Contains("id_map.json"));
  dir.write("title_map.json", R"({"B0A": 5})");
  REQUIRE_THROWS_WITH(read(), Contains("title_map.json: key \"B0A\": expected a title string"));
  dir.write("title_map.json", R"({"B0A": "A"})");
  dir.write("id_map.json", R"({"B0A": 1, "B0B": "2"})");
  REQUIRE_THROWS_WITH(read(), Contains("id_map.json: key \"B0B\": expected an integer id, found string"));
  dir.write("id_map.json", R"({"B0A": 1, "B0B": 1})");
  REQUIRE_THROWS_WITH(read(), Contains("\"B0A\" and \"B0B\" both map to id 1"));
  std::filesystem::remove(dir.file("id_map.json"));
  REQUIRE_THROWS_WITH(read(), Contains("id_map.json") && Contains("no such file"));
  dir.write("id_map.json", R"({"B0A": 1, "B0B": 2})");
  std::filesystem::remove(dir.file("title_map.json"));
  REQUIRE_THROWS_WITH(read(), Contains("title_map.json") && Contains("no such file"));
  dir.write("title_map.json", R"({"B0A": "A"})");
  REQUIRE_THROWS_WITH(read("other.json"), Contains("other.json") && Contains("no such file"));
  dir.write("more.json", R"({"u0": [1]})");
  REQUIRE_THROWS_WITH(read(""), Contains("more.json, seqs.json") && Contains("sequences_file"));
  CHECK(read("more.json").users.size() == 1);
}

// ------------------------------------------------------------------------------------------------
// LLM4DSR CSV windows

namespace {
const char* kCsvHeader = "user_id,item_ids,mask,item_titles,replaced_item_titles,timestamp\n";
// id2name in a non-sorted key order; "Heat" is the title of two items, so title lookup takes the first.
const char* kId2Name =
    "{\"208\": \"The Entity\", \"5\": \"Heat\", \"1000\": \"Schindler's List\", \"77\": \"Heat\", "
    "\"9\": \"Say \\\"hi\\\", it's me\", \"12\": \"Am\xC3\xA9lie\"}";

void write_csv_folder(const TempDir& dir) {
  dir.write("id2name.json", kId2Name);
  dir.write("train.csv",
            std::string(kCsvHeader) +
                // clean window, list timestamps
                "1,\"[208, 5, 1000]\",\"[0, 0, 0]\",\"['The Entity', 'Heat', \"\"Schindler's List\"\"]\",[],"
                "\"[10, 20, 30.5]\"\n"
                // noise at position 1 (original Heat -> first id with that title: 5) and replacement at
                // position 3 (original Amelie); titles field spans two lines; scalar timestamp
                "2,\"[208, 1000, 9, 77]\",\"[0, 1, 0, 2]\",\"['The Entity', \"\"Schindler's List\"\",\n"
                " 'Say \"\"hi\"\", it\\'s me', 'Heat']\",\"['Heat', 'Am\xC3\xA9lie']\",1234\n"
                // an item only seen in the CSV, titled from item_titles; empty timestamp
                "2,\"[12, 4242]\",\"[0, 0]\",\"['Am\\xe9lie', 'New, Item (2001)']\",[],\n");
  // Columns in another order, plus original_item_ids (used instead of the replaced titles) and
  // string ids.
  dir.write("valid_0.csv",
            "mask,user_id,timestamp,item_ids,original_item_ids,replaced_item_titles,item_titles\n"
            "\"[1, 0]\",3,,\"[77, 'B00\\'Y']\",\"[208, 'B00\\'Y']\",['Heat'],\"['Heat', \"\"Y's\"\"]\"\n");
  dir.write("test.csv", std::string(kCsvHeader));
}
}  // namespace

TEST_CASE("LLM4DSR CSV: titles, masks, originals, timestamps, catalogue", "[readers]") {
  TempDir dir;
  write_csv_folder(dir);
  const auto d = llm4dsr::read_llm4dsr_csv(dir.path());
  CHECK(d.format == "llm4dsr-csv");
  CHECK(d.users.empty());
  REQUIRE(d.splits.has_value());
  CHECK(d.splits->protocol == llm4dsr::SplitProtocol::kWindows);
  const auto& c = d.catalog;
  REQUIRE(c.size() == 8);
  CHECK(external_ids(c, {1, 2, 3, 4, 5, 6, 7, 8}) == Strings{"208", "5", "1000", "77", "9", "12", "4242", "B00'Y"});
  CHECK(c.title(3) == "Schindler's List");
  CHECK(c.title(5) == "Say \"hi\", it's me");
  CHECK(c.title(6) == "Am\xC3\xA9lie");
  CHECK(c.title(7) == "New, Item (2001)");
  CHECK(c.title(8) == "Y's");

  REQUIRE(d.splits->train.size() == 3);
  const auto& w0 = d.splits->train[0];
  CHECK(w0.user_id == "1");
  CHECK(external_ids(c, w0.items) == Strings{"208", "5", "1000"});
  CHECK(w0.labels == std::vector<uint8_t>{0, 0, 0});
  CHECK(w0.original_items == w0.items);
  CHECK(w0.timestamps == std::vector<double>{10, 20, 30.5});
  CHECK(w0.offset == 0);

  const auto& w1 = d.splits->train[1];
  CHECK(external_ids(c, w1.items) == Strings{"208", "1000", "9", "77"});
  CHECK(w1.labels == std::vector<uint8_t>{0, 1, 0, 2});
  CHECK(external_ids(c, w1.original_items) == Strings{"208", "5", "9", "12"});
  CHECK(w1.timestamps.empty());  // scalar timestamp: dropped

  const auto& w2 = d.splits->train[2];
  CHECK(external_ids(c, w2.items) == Strings{"12", "4242"});
  CHECK(w2.timestamps.empty());

  REQUIRE(d.splits->valid.size() == 1);
  const auto& v0 = d.splits->valid[0];
  CHECK(v0.user_id == "3");
  CHECK(external_ids(c, v0.items) == Strings{"77", "B00'Y"});
  CHECK(v0.labels == std::vector<uint8_t>{1, 0});
  CHECK(external_ids(c, v0.original_items) == Strings{"208", "B00'Y"});  // from original_item_ids, not "Heat" -> 5
  CHECK(d.splits->test.empty());
  CHECK(d.has_timestamps);

  // Popularity counts targets: 1000, 77, 4242, B00'Y.
  CHECK(c.popularity() == std::vector<int64_t>{0, 0, 0, 1, 1, 0, 0, 1, 1});
  for (const auto* split : {&d.splits->train, &d.splits->valid})
    for (const auto& s : *split) CHECK_NOTHROW(s.validate(c.size()));
  CHECK(llm4dsr::read_dataset(dir.path()).splits->train.size() == 3);
  CHECK(llm4dsr::read_dataset(dir.file("train.csv")).splits->valid.size() == 1);
}

TEST_CASE("LLM4DSR CSV: malformed input names file and line", "[readers]") {
  TempDir dir;
  write_csv_folder(dir);
  auto read = [&] { return llm4dsr::read_llm4dsr_csv(dir.path()); };
  const std::string h = kCsvHeader;
  auto test_rows = [&](const std::string& rows) { dir.write("test.csv", h + rows); };

  test_rows("1,[5],[0],['Heat'],[],\n1,\"[208, 5]\",\"[0, 1]\",\"['The Entity', 'Heat']\",['No Such Film'],\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:3, column replaced_item_titles: title \"No Such Film\" (position 1)"));
  test_rows("1,\"[208,\n5]\",\"[0,\n1]\",\"['The Entity', 'Heat']\",['Heat'],\n1,[5],\"[0, 0]\",['Heat'],[],\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:5, column mask: 2 labels for 1 item ids"));
  test_rows("1,[5],[3],['Heat'],['Heat'],\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:2, column mask: position 0: label 3"));
  test_rows("1,[5],[0],['Heat']\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:2: truncated line: expected 6 fields") && Contains("found 4"));
  test_rows("1,\"[5, 6\",[0],['Heat'],[],\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:2, column item_ids: expected ',' or ']'"));
  test_rows("1,[],[],[],[],\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:2, column item_ids: empty window"));
  test_rows("1,[5.5],[0],['Heat'],[],\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:2, column item_ids: position 0: item id 5.5 is a float"));
  test_rows("1,\"[5, 208]\",\"[0, 0]\",['Heat'],[],\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:2, column item_titles: 1 titles for 2 item ids"));
  test_rows("1,[5],[1],['Heat'],[],\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:2, column replaced_item_titles: 0 titles for 1 positions"));
  test_rows("1,[5],[0],['Heat'],[],\"[1, 2]\"\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:2, column timestamp: 2 timestamps for 1 item ids"));
  test_rows("1,[5],[0],['Heat'],[],noon\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:2, column timestamp: 'noon' is not a number"));
  test_rows("1,\"[5, 6]\",\"[0, 0]\",\"['Heat', 'open\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:2: unterminated quoted field"));
  test_rows("1,[5],[0],['Caf\xE9'],[],\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv: not valid UTF-8 at line 2, byte 16"));
  dir.write("test.csv", "user_id,items,mask\n1,[5],[0]\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:1: header has no 'item_ids' column (found: user_id, items, mask)"));
  dir.write("test.csv", "");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv: empty file"));
  dir.write("test.csv",
            "user_id,item_ids,mask,original_item_ids\n1,\"[5, 208]\",\"[0, 0]\",\"[77, 208]\"\n");
  REQUIRE_THROWS_WITH(read(), Contains("test.csv:2, column original_item_ids: position 0 has mask 0"));
  dir.write("test.csv", h);

  dir.write("id2name.json", R"({"5": ["Heat"]})");
  REQUIRE_THROWS_WITH(read(), Contains("id2name.json: key \"5\": expected a title string"));
  std::filesystem::remove(dir.file("id2name.json"));
  REQUIRE_THROWS_WITH(read(), Contains("id2name.json") && Contains("no such file"));
  dir.write("id2name.json", kId2Name);
  dir.write("train_extra.csv", h);
  REQUIRE_THROWS_WITH(read(), Contains("more than one train*.csv") && Contains("train.csv, train_extra.csv"));
  std::filesystem::remove(dir.file("train_extra.csv"));
  std::filesystem::remove(dir.file("valid_0.csv"));
  REQUIRE_THROWS_WITH(read(), Contains("no valid*.csv in"));
}

// ------------------------------------------------------------------------------------------------
// Format detection

TEST_CASE("detect_format recognises each layout", "[readers]") {
  using llm4dsr::DataFormat;
  TempDir recbole, ml, amazon, csv, other;
  recbole.write("toy.inter", kInter);
  recbole.write("toy.item", kItem);
  ml.write("u.data", "1\t1\t1\t1\n");
  ml.write("u.item", ml_item_line(1, "A", {}));
  amazon.write("id_map.json", R"({"A": 1})");
  amazon.write("title_map.json", "{}");
  amazon.write("s.json", R"({"u": [1]})");
  write_csv_folder(csv);
  other.write("notes.txt", "hello");

  CHECK(llm4dsr::detect_format(recbole.path()) == DataFormat::kRecBole);
  CHECK(llm4dsr::detect_format(recbole.file("toy.inter")) == DataFormat::kRecBole);
  CHECK(llm4dsr::detect_format(ml.path()) == DataFormat::kMovieLens);
  CHECK(llm4dsr::detect_format(ml.file("u.data")) == DataFormat::kMovieLens);
  CHECK(llm4dsr::detect_format(amazon.path()) == DataFormat::kAmazonJson);
  CHECK(llm4dsr::detect_format(amazon.file("s.json")) == DataFormat::kAmazonJson);
  CHECK(llm4dsr::detect_format(csv.path()) == DataFormat::kLlm4dsrCsv);
  CHECK(llm4dsr::detect_format(csv.file("train.csv")) == DataFormat::kLlm4dsrCsv);
  CHECK(llm4dsr::detect_format(csv.file("id2name.json")) == DataFormat::kLlm4dsrCsv);
  CHECK(llm4dsr::detect_format("synthetic") == DataFormat::kSynthetic);
  CHECK(llm4dsr::detect_format("synthetic:users=5") == DataFormat::kSynthetic);
  REQUIRE_THROWS_WITH(llm4dsr::detect_format(other.path()),
                      Contains("cannot tell the format") && Contains("*.inter") && Contains("u.data") &&
                          Contains("id_map.json") && Contains("train*.csv"));
  REQUIRE_THROWS_WITH(llm4dsr::detect_format(other.file("notes.txt")), Contains("notes.txt"));
  REQUIRE_THROWS_WITH(llm4dsr::detect_format(other.file("absent")), Contains("no such file or folder"));

  // An explicit format overrides detection.
  llm4dsr::ReadOptions options;
  options.format = DataFormat::kMovieLens;
  REQUIRE_THROWS_WITH(llm4dsr::read_dataset(recbole.path(), options), Contains("u.item") && Contains("no such file"));
}

TEST_CASE("data format names round-trip", "[readers]") {
  using llm4dsr::DataFormat;
  for (DataFormat f : {DataFormat::kAuto, DataFormat::kRecBole, DataFormat::kMovieLens, DataFormat::kAmazonJson,
                       DataFormat::kLlm4dsrCsv, DataFormat::kSynthetic})
    CHECK(llm4dsr::parse_data_format(llm4dsr::to_string(f)) == f);
  CHECK(llm4dsr::to_string(DataFormat::kLlm4dsrCsv) == "llm4dsr-csv");
  REQUIRE_THROWS_WITH(llm4dsr::parse_data_format("parquet"), Contains("unknown data format 'parquet'") && Contains("recbole"));
}

TEST_CASE("read_dataset builds the synthetic dataset from its spec", "[readers]") {
  const auto d = llm4dsr::read_dataset("synthetic:users=20,items=50,seed=3");
  CHECK(d.format == "synthetic");
  CHECK(d.users.size() == 20);
  CHECK(d.catalog.size() == 50);
}

// ------------------------------------------------------------------------------------------------
// Real data

TEST_CASE("real data: ML-100K, RecBole and raw readers agree", "[readers]") {
  const std::string data = shared_data_dir();
  if (data.empty()) {
    WARN("shared data absent; skipped");
    return;
  }
  llm4dsr::ReadOptions options;
  options.extra_field = "class";
  const auto rb = llm4dsr::read_dataset(data + "/ml-100k", options);
  const auto raw = llm4dsr::read_dataset(data + "/ml-100k-raw");
  CHECK(rb.format == "recbole");
  CHECK(raw.format == "movielens");
  CHECK(rb.name == "ml-100k");
  for (const auto* d : {&rb, &raw}) {
    const auto stats = llm4dsr::compute_stats(*d);
    CHECK(stats.users == 943);
    CHECK(stats.items == 1682);
    CHECK(stats.interactions == 100000);
    CHECK(stats.min_length == 20);  // ML-100K is a 20-core for users
  }
  CHECK(rb.catalog.title(rb.catalog.id("1")) == "Toy Story");
  CHECK(rb.catalog.extra(rb.catalog.id("1")) == "Animation Children's Comedy");
  CHECK(raw.catalog.title(raw.catalog.id("1")) == "Toy Story (1995)");
  CHECK(raw.catalog.extra(raw.catalog.id("1")) == "Animation, Children's, Comedy");
  CHECK(raw.catalog.title(raw.catalog.id("543")) == "Mis\xC3\xA9rables, Les (1995)");
  CHECK(rb.catalog.title(rb.catalog.id("543")) == "Mis\xC3\xA9rables, Les");
  CHECK(raw.catalog.title(raw.catalog.id("1005")).find("V\xC3\xA9ronique") != std::string::npos);

  // Same users in the same order with the same external item sequences and timestamps.
  REQUIRE(rb.users.size() == raw.users.size());
  for (size_t u = 0; u < rb.users.size(); ++u) {
    REQUIRE(rb.users[u].user_id == raw.users[u].user_id);
    REQUIRE(external_items(rb, rb.users[u]) == external_items(raw, raw.users[u]));
    REQUIRE(rb.users[u].timestamps == raw.users[u].timestamps);
    REQUIRE(std::is_sorted(rb.users[u].timestamps.begin(), rb.users[u].timestamps.end()));
  }

  // Independent count from a plain parse of u.data: ratings of Star Wars (item 50) and of user 196.
  std::ifstream in(data + "/ml-100k-raw/u.data");
  std::string user, item, rating, time;
  int64_t star_wars = 0, user196 = 0;
  while (in >> user >> item >> rating >> time) {
    star_wars += item == "50";
    user196 += user == "196";
  }
  CHECK(star_wars == 583);
  CHECK(raw.catalog.popularity(raw.catalog.id("50")) == star_wars);
  CHECK(rb.catalog.popularity(rb.catalog.id("50")) == star_wars);
  const auto it = std::find_if(raw.users.begin(), raw.users.end(), [](const auto& s) { return s.user_id == "196"; });
  REQUIRE(it != raw.users.end());
  CHECK(it->size() == user196);
  CHECK(raw.users.front().user_id == "196");  // first line of u.data

  // Every non-ASCII byte of u.item is Latin-1: the decoded titles hold exactly one 2-byte UTF-8
  // sequence per such byte.
  std::ifstream item_in(data + "/ml-100k-raw/u.item", std::ios::binary);
  std::stringstream raw_bytes;
  raw_bytes << item_in.rdbuf();
  int64_t high = 0;
  for (char ch : raw_bytes.str()) high += static_cast<unsigned char>(ch) >= 0x80;
  int64_t leads = 0;
  for (int64_t id = 1; id <= raw.catalog.size(); ++id)
    for (char ch : raw.catalog.title(id)) leads += (static_cast<unsigned char>(ch) & 0xE0) == 0xC0;
  CHECK(high > 0);
  CHECK(leads == high);
}

TEST_CASE("real data: Amazon Beauty", "[readers]") {
  const std::string data = shared_data_dir();
  if (data.empty()) {
    WARN("shared data absent; skipped");
    return;
  }
  const auto d = llm4dsr::read_dataset(data + "/amazon-beauty");
  CHECK(d.format == "amazon-json");
  const auto stats = llm4dsr::compute_stats(d);
  CHECK(stats.users == 22363);
  CHECK(stats.items == 12101);
  CHECK(stats.interactions == 198502);
  CHECK(stats.titled_items == 12094);
  for (int64_t id = 1; id <= d.catalog.size(); ++id) REQUIRE(d.catalog.external_id(id) == std::to_string(id));
  REQUIRE(!d.users.empty());
  CHECK(d.users[0].user_id == "user0");
  REQUIRE(d.users[0].size() >= 3);
  CHECK(std::vector<int64_t>(d.users[0].items.begin(), d.users[0].items.begin() + 3) ==
        std::vector<int64_t>{8498, 10548, 2330});
  CHECK(d.users[1].user_id == "user1");
}
