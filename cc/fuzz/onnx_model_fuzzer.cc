// libFuzzer target: loading an ONNX model from arbitrary bytes, and running it.
//
// servekit's own checks (CheckOnnxBytes) come first, then ONNX Runtime parses and
// builds the session; every failure must come back as a Status. A model that loads
// has its signature read and, when its inputs are small numeric tensors, is run once
// on zeros, exercising feed checks, output shape prediction and the fallback.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "cc/onnx_model.h"

namespace {

// Zero-filled feeds for `signature`, dynamic dims 1; false when they would be large
// or are not plain numeric tensors.
bool SmallZeroFeeds(const servekit::Signature& signature, std::vector<servekit::NamedTensor>* feeds) {
  if (signature.inputs.size() > 8) return false;
  for (const auto& spec : signature.inputs) {
    if (spec.unknown_rank || spec.dtype == servekit::DType::kString || spec.dims.size() > 6) return false;
    servekit::Shape shape;
    int64_t elements = 1;
    for (const auto& d : spec.dims) {
      const int64_t size = d.is_static() ? d.size : 1;
      if (size > 64) return false;
      elements *= size;
      shape.push_back(size);
    }
    if (elements > 4096) return false;
    auto t = servekit::Tensor::Allocate(spec.dtype, shape);
    if (!t.ok()) return false;
    feeds->push_back(servekit::NamedTensor{spec.name, std::move(t).value()});
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  servekit::LoadOptions options;
  options.intra_op_threads = 1;  // no thread pools per session
  options.inter_op_threads = 1;
  auto model = servekit::OnnxModel::LoadFromBytes(bytes, options, "fuzz input");
  if (!model.ok()) return 0;
  const auto& signature = (*model)->signatures()[0];
  for (const auto& t : signature.outputs) (void)servekit::SpecToString(t);
  std::vector<servekit::NamedTensor> feeds;
  if (SmallZeroFeeds(signature, &feeds)) {
    (void)(*model)->Run(signature.name, feeds);
    (void)(*model)->Run(signature.name, {});  // and a feed check failure
  }
  return 0;
}
