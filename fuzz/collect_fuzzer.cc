// libFuzzer target: the results.jsonl reader of `moa collect` (launch/collect_selection.h) on
// any text, and, when it yields records, DomainBed's selection and the tables in every format
// (launch/collect.h).
#include <sstream>

#include "fuzz/fuzz_input.h"
#include "launch/collect.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::istringstream text(moa::fuzz::InputText(data, size));
  const auto records = moa::launch::ParseResultsJsonl(text, "results.jsonl");
  if (!records.ok() || records->empty()) return 0;
  for (moa::launch::TableFormat format :
       {moa::launch::TableFormat::kText, moa::launch::TableFormat::kMarkdown,
        moa::launch::TableFormat::kLatex}) {
    moa::launch::FormatResults(*records, format);
  }
  return 0;
}
