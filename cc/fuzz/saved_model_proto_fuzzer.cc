// libFuzzer target: the saved_model.pb / MetaGraphDef decoder on arbitrary bytes.
//
// Every input must parse or fail with a Status: no crash, no hang, no sanitizer
// report. Parsed meta graphs also go through signature extraction and tag lookup.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cc/saved_model_proto.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto saved_model = servekit::ParseSavedModel(bytes);
  if (saved_model.ok()) {
    for (const auto& meta : saved_model->meta_graphs) {
      auto signatures = servekit::SignaturesFromMetaGraph(meta);
      if (signatures.ok()) {
        for (const auto& s : *signatures) {
          for (const auto& t : s.inputs) (void)servekit::SpecToString(t);
        }
      }
      (void)servekit::TagsToString(meta.tags);
    }
    (void)servekit::FindMetaGraph(*saved_model, {"serve"});
  }
  // The same bytes as a bare MetaGraphDef (what TF_LoadSessionFromSavedModel returns).
  auto meta = servekit::ParseMetaGraphDef(bytes);
  if (meta.ok()) (void)servekit::SignaturesFromMetaGraph(*meta);
  return 0;
}
