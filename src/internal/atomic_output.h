// A binary output stream that becomes `path` only on commit(): data goes to a temporary sibling that
// is renamed into place, so a reader never sees a half-written file (and a failed write leaves the
// previous file intact). Streams large payloads (model weights) without building them in memory.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "llm4dsr/error.h"

namespace llm4dsr::internal {

class AtomicOutput {
 public:
  explicit AtomicOutput(const std::string& path)
      : path_(path), tmp_(path + ".tmp." + std::to_string(::getpid())) {
    out_.open(tmp_, std::ios::binary | std::ios::trunc);
    LLM4DSR_CHECK(out_.is_open(), "cannot open " << tmp_ << " for writing (target " << path_ << ")");
  }
  ~AtomicOutput() {
    if (!committed_) {
      out_.close();
      std::error_code ec;
      std::filesystem::remove(tmp_, ec);
    }
  }
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  std::ofstream& stream() { return out_; }

  void commit() {
    out_.flush();
    LLM4DSR_CHECK(out_.good(), "writing " << tmp_ << " failed (disk full?); " << path_ << " was not written");
    out_.close();
    std::error_code ec;
    std::filesystem::rename(tmp_, path_, ec);
    LLM4DSR_CHECK(!ec, "cannot rename " << tmp_ << " to " << path_ << ": " << ec.message());
    committed_ = true;
  }

 private:
  std::string path_;
  std::string tmp_;
  std::ofstream out_;
  bool committed_ = false;
};

}  // namespace llm4dsr::internal
