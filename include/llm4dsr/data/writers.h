// Writers. Every file is written to a temporary sibling and renamed into place, so a reader never
// sees a half-written file and an interrupted run leaves the old file intact. Inputs are never
// modified.
#pragma once

#include <string>

#include "llm4dsr/data/catalog.h"
#include "llm4dsr/data/sequence.h"
#include "llm4dsr/data/splits.h"

namespace llm4dsr {

// Prepared splits in the LLM4DSR authors' CSV layout (train.csv, valid.csv, test.csv,
// id2name.json), with noise labels in `mask` and originals in `replaced_item_titles`, in the
// catalogue's external ids; read_llm4dsr_csv reads it back. Columns: user_id, item_ids, mask,
// item_titles, replaced_item_titles, timestamp (per-position list, `[]` without timestamps) and
// our extra original_item_ids. An external id is written as an int when it is a canonical integer
// literal, else as a Python string literal. id2name.json maps every catalogue item (catalogue
// order) to its title. Creates `dir` if needed; all files are formatted before any is replaced.
void write_splits_csv(const Splits& splits, const Catalog& catalog, const std::string& dir);

// Sequences as RecBole atomic files `dir/name.inter` (user_id:token item_id:token timestamp:float;
// the position stands in for time when sequences have no timestamps) and `dir/name.item`
// (item_id:token title:token_seq [extra:token_seq]), in external ids.
void write_recbole(const SequenceSet& sequences, const Catalog& catalog, const std::string& dir,
                   const std::string& name);

// One JSON object per line: {"user_id": ..., "item_ids": [external ids], "timestamps": [...]
// (when present), "labels": [...] (when present), "original_item_ids": [...] (when present)}.
// Ids are JSON numbers when every external id of the catalogue is a canonical integer literal,
// else strings; integral timestamps are written as integers. Creates the parent folder if needed.
void write_jsonl(const SequenceSet& sequences, const Catalog& catalog, const std::string& path);

// Writes `contents` to path atomically (temp file in the same folder + rename). Throws Error
// naming the path on failure.
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace llm4dsr
