// Checks of an artifact against its manifest: endpoint signatures and file digests.
//
// Each function returns every mismatch it finds (not just the first), one precise
// message each, e.g.
//   endpoint 'serving_default' output 'logits': dtype expected float32, found float64
// An empty list means the artifact matches.
#ifndef SERVEKIT_CC_VALIDATE_H_
#define SERVEKIT_CC_VALIDATE_H_

#include <string>
#include <vector>

#include "cc/manifest.h"
#include "cc/model.h"

namespace servekit {

// Compares the signatures a `format` artifact exposes (`found`) with the manifest's
// endpoints for that format: every endpoint present (serving_default among them for
// a SavedModel; exactly one for every other format), no extra ones, tensor names, dtypes, ranks,
// static dims equal, dynamic dims dynamic, and symbolic dim names equal where the
// manifest names them, for ONNX (dim_param) and for a SavedModel whose manifest entry
// says `"dim_names": true` (TensorShapeProto.Dim.name in its signature_def): dims that
// share a name in the manifest share it in the artifact. For a SavedModel, also the
// method names.
std::vector<std::string> CompareSignatures(const Manifest& manifest, ModelFormat format,
                                           const std::vector<Signature>& found);

// Checks that every file the manifest lists for `artifact` exists with its sha256,
// and, for a directory artifact, that the directory holds no file the manifest omits.
std::vector<std::string> VerifyDigests(const Manifest& manifest, const ManifestArtifact& artifact);

}  // namespace servekit

#endif  // SERVEKIT_CC_VALIDATE_H_
