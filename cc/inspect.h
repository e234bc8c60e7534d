// InspectArtifact: what `servekit_verify inspect` shows about one artifact.
//
// The endpoints of a SavedModel directory (read from saved_model.pb, without
// starting TensorFlow) or an .onnx file (through an ONNX Runtime session): every
// input and output with its dtype and shape. Given the export's manifest, each
// endpoint also shows what the manifest says about it (stochastic, stateful).
#ifndef SERVEKIT_CC_INSPECT_H_
#define SERVEKIT_CC_INSPECT_H_

#include <optional>
#include <string>
#include <vector>

#include "cc/manifest.h"
#include "cc/model.h"
#include "cc/signature.h"
#include "cc/status.h"
#include "nlohmann/json.hpp"

namespace servekit {

struct InspectReport {
  std::string path;
  ModelFormat format = ModelFormat::kTfSavedModel;
  std::vector<Signature> signatures;
  // The manifest's entries of these endpoints, when a manifest was given (an
  // endpoint the manifest does not list has none).
  std::optional<std::vector<ManifestEndpoint>> manifest_endpoints;

  // A table per endpoint: "input  features  float32  [?,3]  serving_default_features:0".
  std::string ToText() const;
  // {"path", "format", "endpoints": [the manifest's endpoint form, plus "stochastic" and
  // "stateful" when a manifest was given]}.
  nlohmann::json ToJson() const;
};

// `tags` select the SavedModel MetaGraph; `manifest_path`, if given, is read for the
// endpoints' stochastic/stateful marks.
StatusOr<InspectReport> InspectArtifact(const std::string& path, const std::vector<std::string>& tags = {"serve"},
                                        const std::optional<std::string>& manifest_path = std::nullopt);

}  // namespace servekit

#endif  // SERVEKIT_CC_INSPECT_H_
