// Builds the embedded synthetic dataset, injects 10% artificial noise, splits it into windows and
// prints what a C++ trainer would feed its model. Exits non-zero if anything is inconsistent, so the
// test suite can run it as a link-and-run check of the installed package.
#include <llm4dsr/llm4dsr.h>

#include <iostream>

int main(int argc, char** argv) {
  try {
    llm4dsr::set_num_threads(0);
    llm4dsr::SyntheticOptions options;
    options.num_users = 50;
    options.num_items = 200;
    llm4dsr::Dataset dataset = llm4dsr::make_synthetic(options);
    const llm4dsr::DatasetStats stats = llm4dsr::compute_stats(dataset);

    llm4dsr::PrepareOptions prepare;
    prepare.protocol = llm4dsr::SplitProtocol::kWindows;
    prepare.noise_alpha = 0.1;
    prepare.seed = 7;
    const llm4dsr::Splits splits = llm4dsr::prepare(dataset, prepare);

    int64_t noisy = 0, positions = 0;
    for (const auto& window : splits.train) {
      window.validate(dataset.catalog.size());
      for (uint8_t label : window.labels) noisy += label == 1;
      positions += window.size();
    }
    std::cout << "users " << stats.users << ", items " << stats.items << ", interactions " << stats.interactions
              << "\nwindows train/valid/test " << splits.train.size() << "/" << splits.valid.size() << "/"
              << splits.test.size() << "\nnoisy positions in train windows " << noisy << " of " << positions
              << "\nfirst target: " << dataset.catalog.title(splits.train.front().target()) << "\n";
    if (stats.users != options.num_users || splits.train.empty() || splits.test.empty()) return 1;
    return 0;
  } catch (const llm4dsr::Error& e) {
    std::cerr << "llm4dsr error: " << e.what() << "\n";
    return 2;
  }
}
