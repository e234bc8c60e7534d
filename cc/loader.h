// LoadModel: opens a SavedModel directory or an .onnx file as a Model.
#ifndef SERVEKIT_CC_LOADER_H_
#define SERVEKIT_CC_LOADER_H_

#include <memory>
#include <optional>
#include <string>

#include "cc/model.h"

namespace servekit {

// The format of the artifact at `path`: a directory is a SavedModel, a file ending
// in ".onnx" is ONNX; anything else is an error naming the path.
StatusOr<ModelFormat> DetectFormat(const std::string& path);

// Loads `path` in its detected format (or `format` when given).
StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path, const LoadOptions& options = {},
                                           std::optional<ModelFormat> format = std::nullopt);

}  // namespace servekit

#endif  // SERVEKIT_CC_LOADER_H_
