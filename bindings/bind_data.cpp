// Python bindings of the data layer: Catalog, Sequence, SequenceSet, Dataset, Splits, readers,
// preparation (splits + artificial noise), writers and the synthetic default dataset.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl_bind.h>

#include "bindings.h"
#include "llm4dsr/data/catalog.h"
#include "llm4dsr/data/dataset.h"
#include "llm4dsr/data/noise.h"
#include "llm4dsr/data/readers.h"
#include "llm4dsr/data/sequence.h"
#include "llm4dsr/data/splits.h"
#include "llm4dsr/data/synthetic.h"
#include "llm4dsr/data/writers.h"
#include "llm4dsr/error.h"

namespace py = pybind11;

PYBIND11_MAKE_OPAQUE(llm4dsr::SequenceSet)

namespace llm4dsr::bindings {
namespace {


py::dict stats_to_dict(const DatasetStats& s, bool pre_split) {
  py::dict d;
  d["users"] = s.users;
  d["items"] = s.items;
  d["interactions"] = s.interactions;
  d["mean_length"] = s.mean_length;
  d["min_length"] = s.min_length;
  d["max_length"] = s.max_length;
  d["titled_items"] = s.titled_items;
  d["noisy_interactions"] = s.noisy_interactions;
  if (pre_split) {
    d["train"] = s.train;
    d["valid"] = s.valid;
    d["test"] = s.test;
  }
  return d;
}

}  // namespace

void bind_data(py::module_& m) {
  py::class_<Catalog>(m, "Catalog",
                      "Item vocabulary: dense internal ids 1..N (0 = padding) <-> external ids, titles, extra "
                      "text, popularity.")
      .def(py::init<>())
      .def("add", &Catalog::add, py::arg("external_id"), "Add an item (or find it); returns its internal id.")
      .def("__len__", &Catalog::size)
      .def_property_readonly("size", &Catalog::size)
      .def("__contains__", &Catalog::contains)
      .def("id", &Catalog::id, py::arg("external_id"), "Internal id of an external id (Error when unknown).")
      .def("find", &Catalog::find, py::arg("external_id"), "Internal id or None.")
      .def("external_id", &Catalog::external_id, py::arg("id"))
      .def("title", &Catalog::title, py::arg("id"))
      .def("extra", &Catalog::extra, py::arg("id"))
      .def("set_title", &Catalog::set_title, py::arg("id"), py::arg("title"))
      .def("set_extra", &Catalog::set_extra, py::arg("id"), py::arg("extra"))
      .def("has_title", &Catalog::has_title, py::arg("id"))
      .def_property_readonly("titled_count", &Catalog::titled_count)
      .def_property_readonly(
          "titles", [](const Catalog& c) {
            std::vector<std::string> out;
            out.reserve(c.size());
            for (int64_t i = 1; i <= c.size(); ++i) out.push_back(c.title(i));
            return out;
          },
          "Titles of items 1..N (index 0 of the list is item 1).")
      .def_property_readonly(
          "external_ids", [](const Catalog& c) {
            std::vector<std::string> out;
            out.reserve(c.size());
            for (int64_t i = 1; i <= c.size(); ++i) out.push_back(c.external_id(i));
            return out;
          })
      .def_property_readonly(
          "popularity", [](const Catalog& c) { return to_numpy(c.popularity()); },
          "int64 array of length N+1: interaction count per internal id (index 0 unused).");

  py::class_<Sequence>(m, "Sequence",
                       "One user's chronological items, or one window of them (the last item is the target).")
      .def(py::init<>())
      .def(py::init([](std::string user_id, const py::object& items) {
             Sequence s;
             s.user_id = std::move(user_id);
             s.items = typed_vector<int64_t>(items, "items", Elements::kIntegers);
             return s;
           }),
           py::arg("user_id"), py::arg("items"))
      .def_readwrite("user_id", &Sequence::user_id)
      .def_readwrite("offset", &Sequence::offset)
      .def_property(
          "items", [](const Sequence& s) { return to_numpy(s.items); },
          [](Sequence& s, const py::object& a) { s.items = typed_vector<int64_t>(a, "items", Elements::kIntegers); })
      .def_property(
          "timestamps", [](const Sequence& s) { return to_numpy(s.timestamps); },
          [](Sequence& s, const py::object& a) {
            s.timestamps = typed_vector<double>(a, "timestamps", Elements::kReals);
          })
      .def_property(
          "labels", [](const Sequence& s) { return to_numpy(s.labels); },
          [](Sequence& s, const py::object& a) {
            s.labels = typed_vector<uint8_t>(a, "labels", Elements::kIntegersOrBools);
          },
          "Noise label per position: 0 clean, 1 injected noise, 2 replaced for self-supervised training; "
          "empty when unknown.")
      .def_property(
          "original_items", [](const Sequence& s) { return to_numpy(s.original_items); },
          [](Sequence& s, const py::object& a) {
            s.original_items = typed_vector<int64_t>(a, "original_items", Elements::kIntegers);
          })
      .def_property_readonly("target", &Sequence::target)
      .def_property_readonly("has_labels", &Sequence::has_labels)
      .def_property_readonly("has_timestamps", &Sequence::has_timestamps)
      .def("__len__", &Sequence::size)
      .def("validate", &Sequence::validate, py::arg("num_items"))
      .def("slice", &Sequence::slice, py::arg("begin"), py::arg("end"))
      .def("__repr__", [](const Sequence& s) {
        return "<Sequence user_id='" + s.user_id + "' length=" + std::to_string(s.size()) + ">";
      });

  py::bind_vector<SequenceSet>(m, "SequenceSet", "A list of Sequence objects, held in C++ (no copies on access).");

  py::class_<Splits>(m, "Splits")
      .def(py::init<>())
      .def_property_readonly("protocol", [](const Splits& s) { return to_string(s.protocol); })
      .def_readwrite("train", &Splits::train)
      .def_readwrite("valid", &Splits::valid)
      .def_readwrite("test", &Splits::test);

  py::class_<Dataset>(m, "Dataset")
      .def(py::init<>())
      .def_readwrite("name", &Dataset::name)
      .def_readwrite("format", &Dataset::format)
      .def_readwrite("catalog", &Dataset::catalog)
      .def_readwrite("users", &Dataset::users)
      .def_readwrite("has_timestamps", &Dataset::has_timestamps)
      .def_readwrite("splits", &Dataset::splits)
      .def("recount_popularity", &Dataset::recount_popularity)
      .def(
          "stats", [](const Dataset& d) { return stats_to_dict(compute_stats(d), d.splits.has_value()); },
          "Statistics as a dict: users, items, interactions, mean/min/max length, titled items (+ windows per split "
          "for pre-split data).")
      .def("__repr__", [](const Dataset& d) {
        return "<Dataset '" + d.name + "' format=" + d.format + " users=" + std::to_string(d.users.size()) +
               " items=" + std::to_string(d.catalog.size()) + ">";
      });

  m.def(
      "read_dataset",
      [](const std::string& path, const std::string& format, const std::string& title_field,
         const std::string& extra_field, const std::string& sequences_file) {
        ReadOptions options;
        options.format = parse_data_format(format);
        options.title_field = title_field;
        options.extra_field = extra_field;
        options.sequences_file = sequences_file;
        py::gil_scoped_release release;
        return read_dataset(path, options);
      },
      py::arg("path"), py::arg("format") = "auto", py::arg("title_field") = "", py::arg("extra_field") = "",
      py::arg("sequences_file") = "",
      "Read a dataset: RecBole atomic files, raw MovieLens-100K, Amazon JSON (IADSR layout), the LLM4DSR "
      "authors' CSV windows, or 'synthetic[:users=..,items=..,seed=..]'. The format is detected unless given.");
  m.def(
      "detect_format", [](const std::string& path) { return to_string(detect_format(path)); }, py::arg("path"));

  m.def(
      "make_synthetic",
      [](int64_t num_users, int64_t num_items, int64_t min_length, int64_t max_length, double off_genre_rate,
         uint64_t seed) {
        SyntheticOptions o;
        o.num_users = num_users;
        o.num_items = num_items;
        o.min_length = min_length;
        o.max_length = max_length;
        o.off_genre_rate = off_genre_rate;
        o.seed = seed;
        py::gil_scoped_release release;
        return make_synthetic(o);
      },
      py::arg("num_users") = SyntheticOptions{}.num_users, py::arg("num_items") = SyntheticOptions{}.num_items,
      py::arg("min_length") = SyntheticOptions{}.min_length, py::arg("max_length") = SyntheticOptions{}.max_length,
      py::arg("off_genre_rate") = SyntheticOptions{}.off_genre_rate, py::arg("seed") = SyntheticOptions{}.seed,
      "The embedded SYNTHETIC default dataset (genre-bearing English titles, users following 1-2 genres).");
  m.def("synthetic_genres", &synthetic_genres);

  m.def(
      "prepare",
      [](const Dataset& dataset, const std::string& split, double noise, uint64_t seed, int64_t max_length,
         double train_ratio, double valid_ratio) {
        PrepareOptions o;
        o.protocol = parse_split_protocol(split);
        o.noise_alpha = noise;
        o.seed = seed;
        o.windows.max_length = max_length;
        o.windows.train_ratio = train_ratio;
        o.windows.valid_ratio = valid_ratio;
        py::gil_scoped_release release;
        return prepare(dataset, o);
      },
      py::arg("dataset"), py::arg("split") = "windows", py::arg("noise") = 0.0, py::arg("seed") = 0,
      py::arg("max_length") = WindowOptions{}.max_length, py::arg("train_ratio") = WindowOptions{}.train_ratio,
      py::arg("valid_ratio") = WindowOptions{}.valid_ratio,
      "Split a dataset ('windows' or 'loo'), injecting artificial noise with probability `noise` first (test "
      "targets are never noised).");
  m.def(
      "split_windows",
      [](const SequenceSet& users, int64_t max_length, double train_ratio, double valid_ratio) {
        WindowOptions o;
        o.max_length = max_length;
        o.train_ratio = train_ratio;
        o.valid_ratio = valid_ratio;
        py::gil_scoped_release release;
        return split_windows(users, o);
      },
      py::arg("users"), py::arg("max_length") = WindowOptions{}.max_length,
      py::arg("train_ratio") = WindowOptions{}.train_ratio, py::arg("valid_ratio") = WindowOptions{}.valid_ratio);
  m.def(
      "split_leave_one_out",
      [](const SequenceSet& users) {
        py::gil_scoped_release release;
        return split_leave_one_out(users);
      },
      py::arg("users"));
  m.def(
      "inject_noise",
      [](SequenceSet& users, int64_t num_items, double alpha, uint64_t seed) {
        NoiseOptions o;
        o.alpha = alpha;
        o.seed = seed;
        py::gil_scoped_release release;
        inject_noise(users, num_items, o);
      },
      py::arg("users"), py::arg("num_items"), py::arg("alpha"), py::arg("seed") = 0,
      "In place: replace each position with probability alpha by a uniformly random other item; sets labels and "
      "original_items.");
  m.def("kcore_filter", &kcore_filter, py::arg("dataset"), py::arg("min_user_interactions"),
        py::arg("min_item_interactions"), py::call_guard<py::gil_scoped_release>());

  m.def("write_splits_csv", &write_splits_csv, py::arg("splits"), py::arg("catalog"), py::arg("dir"),
        py::call_guard<py::gil_scoped_release>(),
        "Prepared splits in the LLM4DSR authors' CSV layout (train/valid/test.csv + id2name.json), labels kept.");
  m.def("write_recbole", &write_recbole, py::arg("sequences"), py::arg("catalog"), py::arg("dir"), py::arg("name"),
        py::call_guard<py::gil_scoped_release>(), "Sequences as RecBole atomic files dir/name.inter + dir/name.item.");
  m.def("write_jsonl", &write_jsonl, py::arg("sequences"), py::arg("catalog"), py::arg("path"),
        py::call_guard<py::gil_scoped_release>(), "One JSON object per sequence, in external ids.");
}

}  // namespace llm4dsr::bindings
