// Readers for the interaction formats we speak. Each throws llm4dsr::Error naming the file and
// line (or JSON key) of the first malformed input.
#pragma once

#include <string>
#include <string_view>

#include "llm4dsr/data/dataset.h"

namespace llm4dsr {

enum class DataFormat {
  kAuto,
  kRecBole,       // NAME.inter (+ NAME.item) atomic files
  kMovieLens,     // raw MovieLens-100K: u.data + u.item (Latin-1)
  kAmazonJson,    // the IADSR authors' layout: sequences JSON + id_map.json + title_map.json
  kLlm4dsrCsv,    // the LLM4DSR authors' windows: train*.csv, valid*.csv, test*.csv + id2name.json
  kSynthetic,     // the embedded generator; path "synthetic" or "synthetic:users=300,items=600,seed=1"
};
std::string to_string(DataFormat format);  // "auto", "recbole", "movielens", "amazon-json", "llm4dsr-csv", "synthetic"
DataFormat parse_data_format(std::string_view name);

// Guesses the format from a file or folder: *.inter -> RecBole; u.data -> MovieLens; a folder with
// id_map.json -> Amazon JSON; train*.csv (+ id2name.json) -> LLM4DSR CSV; "synthetic[:...]" ->
// the generator. Throws Error listing what it looked for when nothing matches.
DataFormat detect_format(const std::string& path);

struct ReadOptions {
  DataFormat format = DataFormat::kAuto;
  // RecBole: the .item column used as title, by field name without type ("movie_title", "title").
  // Empty = the first of movie_title, title, name, item_name present.
  std::string title_field;
  // RecBole: the .item column used as extra text (e.g. "class", "genre", "categories"); empty = none.
  std::string extra_field;
  // Amazon JSON: the sequences file inside the folder; empty = the single *.json that is not
  // id_map.json / title_map.json (e.g. gru_item_list.json).
  std::string sequences_file;
};

// Reads any supported format (auto-detected unless options.format says otherwise).
Dataset read_dataset(const std::string& path, const ReadOptions& options = {});

// path: a .inter file or a folder holding exactly one .inter (and optionally a .item of the same
// name). Columns are found by name (user_id:token, item_id:token, optional timestamp:float); without
// a timestamp the file order is the time order. Catalogue: .item order, then items only seen in the
// .inter. Users in order of first appearance, each sorted by time (ties keep file order).
// Dataset::name is the file's stem.
Dataset read_recbole(const std::string& path, const ReadOptions& options = {});
// dir: holds u.data and u.item; titles ("Toy Story (1995)") are decoded from Latin-1 to UTF-8 (a
// u.item that is already valid UTF-8 is kept as is); genres go to extra as "Animation, Comedy".
// Orders as for RecBole.
Dataset read_movielens(const std::string& dir);
// dir: holds id_map.json (ASIN -> int id), title_map.json (ASIN -> title) and the sequences file
// ({"user": [int ids in time order]}). External item ids are the int ids as decimal strings and the
// catalogue lists them in id order, so internal id == int id when the ids are 1..N. Users keep the
// file's key order; there are no timestamps.
Dataset read_amazon_json(const std::string& dir, const ReadOptions& options = {});
// dir: holds train*.csv, valid*.csv, test*.csv and id2name.json; returns a Dataset with `splits`
// set (noise labels from the `mask` column kept; originals from `original_item_ids` when present,
// else resolved from `replaced_item_titles` through the first item with that title). The catalogue
// is id2name.json in file order, then ids only seen in the CSVs (titled from `item_titles`). A
// `timestamp` list gives per-position timestamps; a scalar timestamp (the target's only) is
// checked to be a number and then dropped, since the history's times cannot be recovered from it.
// Popularity counts each window's target once.
Dataset read_llm4dsr_csv(const std::string& dir);

}  // namespace llm4dsr
