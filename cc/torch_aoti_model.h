// TorchAotiModel: a PyTorch AOTInductor package (.pt2) run through libtorch's
// torch::inductor::AOTIModelPackageLoader.
//
// An AOTInductor package carries no signature servekit can use (its call spec has
// no input names or dtypes), so Load() takes one: LoadModel reads it from the
// manifest.json beside the package (the export's `torch_aoti` endpoint). The package
// runs its flat inputs in signature order and returns its flat outputs in signature
// order; Run() checks every output's dtype and rank against the signature, so a
// manifest that misdescribes the package fails at its first run with the tensor named.
//
// Load() checks that the file exists and is a zip archive (a .pt2), then builds the
// loader on the CPU; every c10::Error becomes a Status naming the package (and the
// tensor). Inputs are at::Tensors over the caller's bytes (torch::from_blob, no
// copy; kept per thread while the caller feeds the same buffers again). Outputs up
// to 64 KiB are copied into the caller's output tensors (reused by Model::RunInto);
// larger ones are views of the returned at::Tensors, kept alive by them, copied only
// when they share storage with an input or the model (a constant). Run() is
// thread-safe (the package's model container serializes its runners).
// libtorch's thread pools are process-wide: LoadOptions' thread counts are not
// applied.
#ifndef SERVEKIT_CC_TORCH_AOTI_MODEL_H_
#define SERVEKIT_CC_TORCH_AOTI_MODEL_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cc/model.h"

namespace servekit {

// Whether `bytes` start like a .pt2 package (a zip archive).
Status CheckAotiBytes(std::string_view bytes, const std::string& what);

class TorchAotiModel final : public Model {
 public:
  // `signature`: the package's one endpoint (usually serving_default).
  static StatusOr<std::unique_ptr<TorchAotiModel>> Load(const std::string& path, const LoadOptions& options,
                                                        Signature signature);
  ~TorchAotiModel() override;

  ModelFormat format() const override { return ModelFormat::kTorchAoti; }

  // A bare AOTIModelPackageLoader::run loop on this package over at::Tensors made once
  // from `inputs` (what a C++ program on libtorch runs).
  StatusOr<std::unique_ptr<BareLoop>> MakeBareLoop(const std::vector<NamedTensor>& inputs) const override;

 private:
  struct Runtime;  // the AOTIModelPackageLoader; torch_aoti_model.cc
  TorchAotiModel(std::string path, std::vector<Signature> signatures, std::unique_ptr<Runtime> runtime);
  Status RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                    OutputSlots* outputs) const override;

  std::unique_ptr<Runtime> runtime_;
};

}  // namespace servekit

#endif  // SERVEKIT_CC_TORCH_AOTI_MODEL_H_
