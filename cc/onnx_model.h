// OnnxModel: an ONNX model loaded through the ONNX Runtime C++ API.
//
// One process-wide Ort::Env serves every session. Load() checks the file first
// (exists, is a non-empty file, is a protocol buffer with a graph), so bad input gets
// servekit's own error, then creates an Ort::Session with the thread, optimization and
// device options; every Ort::Exception becomes a Status. The one endpoint,
// `serving_default`, takes its signature from the session's input and output type
// info, symbolic dim names included. Run() feeds zero-copy Ort::Values that view
// the caller's tensors. Outputs whose shape follows from the signature (static dims,
// or a symbolic dim such as 'batch' shared with an input) are written by ONNX Runtime
// straight into buffers servekit allocates; ONNX Runtime verifies their shape, and a
// model whose outputs defy the prediction falls back, for good, to outputs that ONNX
// Runtime allocates (returned as views, no copy).
#ifndef SERVEKIT_CC_ONNX_MODEL_H_
#define SERVEKIT_CC_ONNX_MODEL_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cc/model.h"

namespace Ort {
struct Session;
struct Value;
}

namespace servekit {

// The endpoint name of an ONNX model's single graph.
inline constexpr char kOnnxEndpoint[] = "serving_default";

// An Ort::Value that owns a copy of `tensor`: how string and empty tensors are fed
// (numeric ones are viewed in place instead).
Status CopyToOrtValue(const Tensor& tensor, Ort::Value* out);

// Whether `bytes` look like an ONNX ModelProto: a well-formed protocol buffer with a
// graph field. `what` names the input in the error.
Status CheckOnnxBytes(std::string_view bytes, const std::string& what);

class OnnxModel final : public Model {
 public:
  static StatusOr<std::unique_ptr<OnnxModel>> Load(const std::string& path, const LoadOptions& options);
  // From bytes in memory (the fuzz target); `label` names them in errors.
  static StatusOr<std::unique_ptr<OnnxModel>> LoadFromBytes(std::string_view bytes, const LoadOptions& options,
                                                            const std::string& label);
  ~OnnxModel() override;

  ModelFormat format() const override { return ModelFormat::kOnnx; }

  // The underlying session, for measurements that bypass servekit (benchmark.cc's
  // bare ONNX Runtime loop). Ort::Session::Run is thread-safe.
  Ort::Session& session() const;
  // Input and output names in session order, as Ort::Session::Run takes them.
  const std::vector<const char*>& input_names() const;
  const std::vector<const char*>& output_names() const;

  struct Runtime;  // ONNX Runtime objects; onnx_model.cc

 private:
  OnnxModel(std::string path, std::vector<Signature> signatures, std::unique_ptr<Runtime> runtime);
  static StatusOr<std::unique_ptr<OnnxModel>> Create(const std::string& path, std::string_view bytes,
                                                     const LoadOptions& options, const std::string& label);
  Status RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                    std::vector<NamedTensor>* outputs) const override;

  std::unique_ptr<Runtime> runtime_;
};

}  // namespace servekit

#endif  // SERVEKIT_CC_ONNX_MODEL_H_
