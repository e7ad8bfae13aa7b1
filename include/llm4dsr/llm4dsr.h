// Umbrella header.
#pragma once

#define LLM4DSR_VERSION_MAJOR 0
#define LLM4DSR_VERSION_MINOR 1
#define LLM4DSR_VERSION_PATCH 0
#define LLM4DSR_VERSION "0.1.0"

#include "llm4dsr/error.h"
#include "llm4dsr/runtime.h"
#include "llm4dsr/data/catalog.h"
#include "llm4dsr/data/sequence.h"
#include "llm4dsr/data/splits.h"
#include "llm4dsr/data/dataset.h"
#include "llm4dsr/data/readers.h"
#include "llm4dsr/data/noise.h"
#include "llm4dsr/data/writers.h"
#include "llm4dsr/data/synthetic.h"
#include "llm4dsr/text/tokenizer.h"
