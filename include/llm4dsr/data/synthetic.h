// The embedded default dataset: a deterministic, SYNTHETIC catalogue and user base.
//
// Titles are made of real English words that carry their genre ("Haunted Cellar" is horror,
// "Starship Odyssey" is science fiction), so a pretrained language model's world knowledge helps as
// it would on real titles. Each user follows one or two genres, drifting between them, with a small
// share of off-genre picks. Nothing here is real user data.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "llm4dsr/data/dataset.h"

namespace llm4dsr {

struct SyntheticOptions {
  int64_t num_users = 300;
  int64_t num_items = 600;     // spread over the genres; at most the number of distinct titles
  int64_t min_length = 12;
  int64_t max_length = 30;
  double off_genre_rate = 0.02;  // natural off-genre picks (not labelled as noise)
  uint64_t seed = 2024;
};

// Parses "synthetic" or "synthetic:users=300,items=600,min_length=12,max_length=30,seed=7"
// (also off_genre_rate=0.02; num_users / num_items are accepted for users / items). Unknown or
// repeated keys, malformed numbers and invalid values are an Error naming them.
SyntheticOptions parse_synthetic_spec(std::string_view spec);

// Same options, same dataset, on every platform. Items get external ids "1".."N" in a shuffled
// order (ids carry no genre), titles unique across the catalogue, extra text = the genre name;
// genres get equal shares of the items (within one). Within a genre, popularity follows a Zipf law
// (weight 1 / rank); a user never repeats an item unless it has seen the whole catalogue. Users
// "1".."num_users" start within 60 days of 2020-09-13 (unix 1600000000) and step 1 to 12 hours
// (integer seconds). The catalogue depends only on seed and num_items, and no user's sequence
// depends on num_users (one random stream per user). Throws Error when num_items exceeds the distinct titles (the message gives the
// maximum, about 3800), num_items < the number of genres, or the lengths or rate are invalid.
Dataset make_synthetic(const SyntheticOptions& options = {});

// The genre names the generator uses, in a fixed order.
std::vector<std::string> synthetic_genres();

}  // namespace llm4dsr
