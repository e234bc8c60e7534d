// LoadModel: opens an artifact of any format servekit runs natively as a Model.
#ifndef SERVEKIT_CC_LOADER_H_
#define SERVEKIT_CC_LOADER_H_

#include <memory>
#include <optional>
#include <string>

#include "cc/model.h"

namespace servekit {

// The format of the artifact at `path`: a directory is a SavedModel (or an ONNX model
// with external data), and a file by its suffix: ".onnx" ONNX, ".xml" OpenVINO IR,
// ".tflite" LiteRT, ".pt2" an AOTInductor package. Anything else is an error naming
// the path.
StatusOr<ModelFormat> DetectFormat(const std::string& path);

// Loads `path` in its detected format (or `format` when given). A torch
// ExportedProgram (ModelFormat::kTorchProgram) has no native runtime: Unimplemented.
StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path, const LoadOptions& options = {},
                                           std::optional<ModelFormat> format = std::nullopt);

// The signature of the AOTInductor package at `package` (which carries none): the
// torch_aoti endpoint of the export's manifest.json beside it.
StatusOr<Signature> AotiSignatureFromManifest(const std::string& package);

// Why `format` cannot be loaded natively, or empty when it can (the verifier's
// explicit note for a torch ExportedProgram).
std::string NoNativeRuntimeReason(ModelFormat format);

}  // namespace servekit

#endif  // SERVEKIT_CC_LOADER_H_
