#include "llm4dsr/data/synthetic.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <unordered_set>

#include "internal/random.h"
#include "llm4dsr/error.h"

namespace llm4dsr {

namespace {

// Each genre's vocabulary. Titles are "{Adjective} {Noun}", "The {Adjective} {Noun}" (each
// adjective-noun pair used once, in one of the two forms) and "{Prefix} {Noun}", so every word of
// a title points at its genre.
struct GenreWords {
  const char* name;
  std::vector<const char*> adjectives;
  std::vector<const char*> nouns;
  std::vector<const char*> prefixes;
};

const std::vector<GenreWords>& genre_words() {
  static const std::vector<GenreWords> kGenres = {
      {"Horror",
       {"Haunted", "Cursed", "Bloody", "Wicked", "Undead", "Sinister", "Possessed", "Ghostly", "Midnight", "Rotting",
        "Silent", "Hollow", "Demonic", "Forsaken", "Grim"},
       {"Cellar", "Crypt", "Asylum", "Graveyard", "Manor", "Coffin", "Ritual", "Phantom", "Specter", "Werewolf",
        "Vampire", "Zombie", "Poltergeist", "Catacomb", "Scream", "Nightmare", "Exorcist", "Chainsaw", "Doll", "Mask"},
       {"Curse of the", "Night of the", "Return of the", "Revenge of the"}},
      {"Science Fiction",
       {"Galactic", "Cosmic", "Interstellar", "Quantum", "Robotic", "Orbital", "Alien", "Cybernetic", "Stellar",
        "Lunar", "Martian", "Atomic", "Temporal", "Infinite", "Hyperspace"},
       {"Starship", "Odyssey", "Nebula", "Android", "Colony", "Voyager", "Outpost", "Cyborg", "Wormhole", "Asteroid",
        "Satellite", "Galaxy", "Reactor", "Clone", "Invasion", "Protocol", "Singularity", "Mothership", "Spaceport",
        "Probe"},
       {"Escape from the", "Attack of the", "Beyond the", "Voyage of the"}},
      {"Romance",
       {"Tender", "Sweet", "Secret", "Eternal", "Passionate", "Forbidden", "Summer", "Golden", "Gentle", "Lovesick",
        "Moonlit", "Charming", "Whispered", "Starlit", "Blushing"},
       {"Kiss", "Heart", "Wedding", "Sweetheart", "Valentine", "Promise", "Rose", "Embrace", "Honeymoon", "Serenade",
        "Bride", "Romance", "Waltz", "Affair", "Courtship", "Proposal", "Lover", "Letter", "Garden", "Vow"},
       {"Love and the", "Summer of the", "Waiting for the", "Dancing with the"}},
      {"Comedy",
       {"Crazy", "Silly", "Wacky", "Goofy", "Clumsy", "Hilarious", "Nutty", "Zany", "Awkward", "Ridiculous",
        "Bumbling", "Cheeky", "Loony", "Giggling", "Madcap"},
       {"Roommates", "Prank", "Vacation", "Slapstick", "Neighbors", "Bachelor", "Sitcom", "Blunder", "Jester",
        "Clown", "Circus", "Mixup", "Babysitter", "Roadtrip", "Shenanigans", "Comedian", "Sidekick", "Picnic", "Party",
        "Karaoke"},
       {"Meet the", "Trouble with the", "Dude, Where's the", "Keeping Up with the"}},
      {"Western",
       {"Dusty", "Lonesome", "Wild", "Rugged", "Desperate", "Rawhide", "Sunbaked", "Wandering", "Lawless", "Renegade",
        "Gunslinging", "Prairie", "Silver", "Restless", "Stubborn"},
       {"Outlaw", "Saloon", "Frontier", "Sheriff", "Cowboy", "Rancher", "Stagecoach", "Bandit", "Posse", "Gunfighter",
        "Mustang", "Canyon", "Homestead", "Marshal", "Drifter", "Rodeo", "Wrangler", "Bounty", "Prospector", "Mesa"},
       {"Return of the", "Ballad of the", "Showdown at the", "Ride of the"}},
      {"War",
       {"Fallen", "Brave", "Bloodstained", "Valiant", "Embattled", "Iron", "Desert", "Frontline", "Hidden", "Steel",
        "Heroic", "Besieged", "Tactical", "Armored", "Scorched"},
       {"Battalion", "Regiment", "Trench", "Platoon", "Squadron", "Bunker", "Battlefield", "Sniper", "Commander",
        "Soldier", "Convoy", "Siege", "Infantry", "Garrison", "Beachhead", "Warship", "Bomber", "Sergeant",
        "Resistance", "Armistice"},
       {"Battle for the", "Siege of the", "Last Stand of the", "March of the"}},
      {"Fantasy",
       {"Enchanted", "Mystic", "Magical", "Ancient", "Elven", "Arcane", "Legendary", "Crystal", "Shadowed", "Emerald",
        "Dragonborn", "Celestial", "Fabled", "Runic", "Sacred"},
       {"Dragon", "Wizard", "Sorcerer", "Kingdom", "Castle", "Quest", "Amulet", "Sword", "Throne", "Unicorn", "Griffin",
        "Goblin", "Prophecy", "Realm", "Spellbook", "Elf", "Enchantress", "Scepter", "Labyrinth", "Oracle"},
       {"Legend of the", "Quest for the", "Lord of the", "Chronicles of the"}},
      {"Crime",
       {"Deadly", "Undercover", "Corrupt", "Crooked", "Stolen", "Ruthless", "Shady", "Fatal", "Criminal",
        "Hardboiled", "Notorious", "Gangland", "Smoky", "Masked", "Unsolved"},
       {"Detective", "Heist", "Alibi", "Mobster", "Gangster", "Witness", "Murder", "Conspiracy", "Informant", "Getaway",
        "Verdict", "Fugitive", "Syndicate", "Racket", "Suspect", "Ransom", "Kingpin", "Confession", "Stakeout",
        "Cartel"},
       {"Case of the", "Death of the", "Hunt for the", "Trail of the"}},
      {"Animation",
       {"Little", "Tiny", "Fluffy", "Bouncy", "Happy", "Friendly", "Cuddly", "Sparkly", "Jolly", "Curious", "Playful",
        "Cheerful", "Sleepy", "Rainbow", "Merry"},
       {"Bunny", "Puppy", "Kitten", "Penguin", "Teddy", "Dinosaur", "Toybox", "Balloon", "Treehouse", "Panda",
        "Duckling", "Snowman", "Mermaid", "Caterpillar", "Lullaby", "Cupcake", "Piglet", "Hedgehog", "Reindeer",
        "Squirrel"},
       {"Adventures of the", "Tales of the", "Journey of the", "Finding the"}},
      {"Sports",
       {"Undefeated", "Championship", "Olympic", "Athletic", "Unstoppable", "Victorious", "Record", "Varsity",
        "Fearless", "Winning", "Professional", "Rookie", "Final", "Overtime", "Knockout"},
       {"Champion", "Striker", "Quarterback", "Boxer", "Marathon", "Coach", "Pitcher", "Goalkeeper", "Playoffs",
        "Stadium", "Tournament", "Underdog", "Trophy", "Racer", "Season", "Comeback", "Slugger", "Wrestler", "Skater",
        "Touchdown"},
       {"Road to the", "Rise of the", "Story of the", "Inside the"}},
  };
  return kGenres;
}

// Random-stream ids, so the catalogue does not change with the number of users.
constexpr uint64_t kCatalogStream = 0xC47A'1065ULL;
constexpr uint64_t kUserStreamBase = 0x05E2'0000'0000ULL;

constexpr double kDriftRate = 0.15;        // chance per step of switching to the other preferred genre
constexpr double kTwoGenreRate = 0.6;      // share of users with two preferred genres
constexpr int64_t kStartTime = 1'600'000'000;
constexpr int64_t kStartSpread = 60 * 24 * 3600;  // users start within 60 days of each other
constexpr int64_t kMinStep = 3600, kMaxStep = 12 * 3600;

// Every distinct title of each genre, shuffled; a title already taken by an earlier genre is
// dropped (none is with the word lists above, but the guard keeps titles unique if they change).
std::vector<std::vector<std::string>> candidate_titles(internal::Rng& rng) {
  std::vector<std::vector<std::string>> out;
  std::unordered_set<std::string> seen;
  for (const auto& g : genre_words()) {
    std::vector<std::string> titles;
    for (const char* a : g.adjectives) {
      for (const char* n : g.nouns) {
        std::string t = std::string(a) + " " + n;
        if (rng.bernoulli(0.25)) t = "The " + t;
        titles.push_back(std::move(t));
      }
    }
    for (const char* p : g.prefixes)
      for (const char* n : g.nouns) titles.push_back(std::string(p) + " " + n);
    rng.shuffle(titles);
    std::vector<std::string> unique;
    for (auto& t : titles)
      if (seen.insert(t).second) unique.push_back(std::move(t));
    out.push_back(std::move(unique));
  }
  return out;
}

void check_options(const SyntheticOptions& o) {
  const int64_t num_genres = static_cast<int64_t>(genre_words().size());
  LLM4DSR_CHECK(o.num_users >= 1, "synthetic: users must be >= 1, got " << o.num_users);
  LLM4DSR_CHECK(o.num_items >= num_genres,
                "synthetic: items must be >= " << num_genres << " (one per genre), got " << o.num_items);
  LLM4DSR_CHECK(o.min_length >= 1 && o.min_length <= o.max_length,
                "synthetic: need 1 <= min_length <= max_length, got min_length=" << o.min_length
                                                                                << " max_length=" << o.max_length);
  LLM4DSR_CHECK(o.max_length <= 1'000'000, "synthetic: max_length must be <= 1000000, got " << o.max_length);
  LLM4DSR_CHECK(o.off_genre_rate >= 0.0 && o.off_genre_rate <= 1.0,
                "synthetic: off_genre_rate must be in [0, 1], got " << o.off_genre_rate);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

template <typename T>
T parse_number(std::string_view key, std::string_view value, std::string_view spec) {
  T v{};
  const auto res = std::from_chars(value.data(), value.data() + value.size(), v);
  LLM4DSR_CHECK(!value.empty() && res.ec == std::errc() && res.ptr == value.data() + value.size(),
                "synthetic spec '" << spec << "': value of '" << key << "' must be a number, got '" << value << "'");
  return v;
}

}  // namespace

std::vector<std::string> synthetic_genres() {
  std::vector<std::string> out;
  for (const auto& g : genre_words()) out.emplace_back(g.name);
  return out;
}

SyntheticOptions parse_synthetic_spec(std::string_view spec) {
  constexpr std::string_view kPrefix = "synthetic";
  LLM4DSR_CHECK(spec.substr(0, kPrefix.size()) == kPrefix,
                "synthetic spec must start with 'synthetic', got '" << spec << "'");
  SyntheticOptions o;
  std::string_view rest = spec.substr(kPrefix.size());
  if (rest.empty()) return o;
  LLM4DSR_CHECK(rest.front() == ':', "synthetic spec '" << spec
                                                        << "': expected 'synthetic' or 'synthetic:key=value,...'");
  rest.remove_prefix(1);
  std::set<std::string, std::less<>> seen;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view pair = trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    LLM4DSR_CHECK(eq != std::string_view::npos,
                  "synthetic spec '" << spec << "': expected key=value, got '" << pair << "'");
    const std::string_view key = trim(pair.substr(0, eq));
    const std::string_view value = trim(pair.substr(eq + 1));
    LLM4DSR_CHECK(seen.insert(std::string(key)).second, "synthetic spec '" << spec << "': key '" << key << "' given twice");
    if (key == "users" || key == "num_users") {
      o.num_users = parse_number<int64_t>(key, value, spec);
    } else if (key == "items" || key == "num_items") {
      o.num_items = parse_number<int64_t>(key, value, spec);
    } else if (key == "min_length") {
      o.min_length = parse_number<int64_t>(key, value, spec);
    } else if (key == "max_length") {
      o.max_length = parse_number<int64_t>(key, value, spec);
    } else if (key == "off_genre_rate") {
      o.off_genre_rate = parse_number<double>(key, value, spec);
    } else if (key == "seed") {
      o.seed = parse_number<uint64_t>(key, value, spec);
    } else {
      LLM4DSR_THROW("synthetic spec '" << spec << "': unknown key '" << key
                                       << "'; known keys: users, items, min_length, max_length, off_genre_rate, seed");
    }
  }
  check_options(o);
  return o;
}

Dataset make_synthetic(const SyntheticOptions& options) {
  check_options(options);
  const auto& genres = genre_words();
  const size_t num_genres = genres.size();

  internal::Rng catalog_rng(options.seed, kCatalogStream);
  const auto candidates = candidate_titles(catalog_rng);
  int64_t capacity = 0;
  for (const auto& c : candidates) capacity += static_cast<int64_t>(c.size());
  LLM4DSR_CHECK(options.num_items <= capacity, "synthetic: items = " << options.num_items << " exceeds the "
                                                                     << capacity
                                                                     << " distinct titles available (maximum items = "
                                                                     << capacity << ")");

  // Round-robin over the genres (skipping full ones), so genre sizes differ by at most one while
  // any genre has room.
  std::vector<size_t> share(num_genres, 0);
  for (int64_t placed = 0; placed < options.num_items;) {
    for (size_t g = 0; g < num_genres && placed < options.num_items; ++g) {
      if (share[g] < candidates[g].size()) {
        ++share[g];
        ++placed;
      }
    }
  }

  // Catalogue order is shuffled so that ids carry no genre information.
  struct Slot {
    size_t genre, rank;
  };
  std::vector<Slot> slots;
  for (size_t g = 0; g < num_genres; ++g)
    for (size_t r = 0; r < share[g]; ++r) slots.push_back({g, r});
  catalog_rng.shuffle(slots);

  Dataset ds;
  ds.name = "synthetic";
  ds.format = "synthetic";
  ds.has_timestamps = true;
  // by_rank[g][r]: internal id of the genre's r-th most popular item.
  std::vector<std::vector<int64_t>> by_rank(num_genres);
  for (size_t g = 0; g < num_genres; ++g) by_rank[g].assign(share[g], 0);
  for (const Slot& s : slots) {
    const int64_t id = ds.catalog.add(std::to_string(ds.catalog.size() + 1));
    ds.catalog.set_title(id, candidates[s.genre][s.rank]);
    ds.catalog.set_extra(id, genres[s.genre].name);
    by_rank[s.genre][s.rank] = id;
  }

  // Zipf popularity within each genre: weight 1 / (rank + 1). Plain IEEE divisions and sums in a
  // fixed order, so the table is the same everywhere.
  std::vector<std::vector<double>> cumulative(num_genres);
  for (size_t g = 0; g < num_genres; ++g) {
    double total = 0.0;
    for (size_t r = 0; r < share[g]; ++r) {
      total += 1.0 / static_cast<double>(r + 1);
      cumulative[g].push_back(total);
    }
  }

  std::vector<bool> used(static_cast<size_t>(ds.catalog.size()) + 1, false);
  auto draw_zipf = [&](internal::Rng& rng, size_t g) -> int64_t {
    const auto& cum = cumulative[g];
    const double u = rng.uniform01() * cum.back();
    size_t r = static_cast<size_t>(std::upper_bound(cum.begin(), cum.end(), u) - cum.begin());
    return by_rank[g][std::min(r, cum.size() - 1)];
  };
  // A user does not take the same title twice (like a rating log): retry a few draws, then take the
  // most popular unseen title of the genre, then of the following genres; only when the user has
  // seen the whole catalogue does a title repeat.
  auto pick = [&](internal::Rng& rng, size_t g) -> int64_t {
    for (int attempt = 0; attempt < 16; ++attempt) {
      const int64_t id = draw_zipf(rng, g);
      if (!used[id]) return id;
    }
    for (size_t k = 0; k < num_genres; ++k) {
      for (int64_t id : by_rank[(g + k) % num_genres])
        if (!used[id]) return id;
    }
    return draw_zipf(rng, g);
  };

  ds.users.reserve(static_cast<size_t>(options.num_users));
  for (int64_t u = 0; u < options.num_users; ++u) {
    internal::Rng rng(options.seed, kUserStreamBase + static_cast<uint64_t>(u));
    size_t preferred[2];
    preferred[0] = static_cast<size_t>(rng.uniform_int(num_genres));
    preferred[1] = (preferred[0] + 1 + static_cast<size_t>(rng.uniform_int(num_genres - 1))) % num_genres;
    const int num_preferred = rng.bernoulli(kTwoGenreRate) ? 2 : 1;
    const int64_t length = rng.uniform_int(options.min_length, options.max_length);
    int64_t time = kStartTime + rng.uniform_int(0, kStartSpread);

    Sequence s;
    s.user_id = std::to_string(u + 1);
    s.items.reserve(static_cast<size_t>(length));
    s.timestamps.reserve(static_cast<size_t>(length));
    int current = 0;
    for (int64_t p = 0; p < length; ++p) {
      if (rng.bernoulli(kDriftRate) && num_preferred == 2) current = 1 - current;
      size_t genre = preferred[current];
      if (rng.bernoulli(options.off_genre_rate)) {
        // Any genre the user does not follow.
        std::vector<size_t> others;
        for (size_t g = 0; g < num_genres; ++g)
          if (g != preferred[0] && (num_preferred == 1 || g != preferred[1])) others.push_back(g);
        genre = others[static_cast<size_t>(rng.uniform_int(others.size()))];
      }
      const int64_t id = pick(rng, genre);
      used[id] = true;
      s.items.push_back(id);
      if (p > 0) time += rng.uniform_int(kMinStep, kMaxStep);
      s.timestamps.push_back(static_cast<double>(time));
      ds.catalog.add_popularity(id);
    }
    for (int64_t id : s.items) used[id] = false;
    ds.users.push_back(std::move(s));
  }
  return ds;
}

}  // namespace llm4dsr
