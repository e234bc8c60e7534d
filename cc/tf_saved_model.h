// TfSavedModel: a TensorFlow SavedModel loaded through the TensorFlow C API.
//
// Load() first checks, without TensorFlow, that the directory is a SavedModel
// (saved_model.pb exists, parses, and has a MetaGraph with the requested tags), so
// bad input gets servekit's own error; then it calls TF_LoadSessionFromSavedModel
// with a hand-serialized ConfigProto (threads, device), decodes the signatures from
// the MetaGraphDef TensorFlow returns, and resolves every signature tensor ("op:index")
// to a TF_Output once. Run() is a single TF_SessionRun (thread-safe).
#ifndef SERVEKIT_CC_TF_SAVED_MODEL_H_
#define SERVEKIT_CC_TF_SAVED_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "cc/model.h"
#include "cc/saved_model_proto.h"

namespace servekit {

// Reads `dir`/saved_model.pb and returns the signatures of the MetaGraph tagged
// `tags`, without loading TensorFlow's runtime. The errors Load() gives for a path
// that is not a usable SavedModel come from here.
StatusOr<std::vector<Signature>> ReadSavedModelSignatures(const std::string& dir,
                                                          const std::vector<std::string>& tags);

// The ConfigProto bytes Load() passes to TensorFlow (exposed for tests).
std::string SerializeTfConfig(const LoadOptions& options);

class TfSavedModel final : public Model {
 public:
  static StatusOr<std::unique_ptr<TfSavedModel>> Load(const std::string& dir, const LoadOptions& options);
  ~TfSavedModel() override;

  ModelFormat format() const override { return ModelFormat::kTfSavedModel; }
  // Devices of the TensorFlow session, e.g. "/job:localhost/replica:0/task:0/device:CPU:0 (CPU)".
  const std::vector<std::string>& devices() const { return devices_; }

 private:
  struct Runtime;  // TensorFlow handles; tf_saved_model.cc
  TfSavedModel(std::string path, std::vector<Signature> signatures, std::unique_ptr<Runtime> runtime,
               std::vector<std::string> devices);
  Status RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                    OutputSlots* outputs) const override;

  std::unique_ptr<Runtime> runtime_;
  std::vector<std::string> devices_;
};

}  // namespace servekit

#endif  // SERVEKIT_CC_TF_SAVED_MODEL_H_
