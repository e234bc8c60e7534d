#include "cc/torch_aoti_model.h"

#include <cstring>
#include <optional>

#include "cc/file_util.h"
#include "torch/csrc/inductor/aoti_package/model_package_loader.h"
#include "torch/torch.h"

namespace servekit {
namespace {

std::optional<at::ScalarType> ToTorch(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return at::kHalf;
    case DType::kBFloat16: return at::kBFloat16;
    case DType::kFloat32: return at::kFloat;
    case DType::kFloat64: return at::kDouble;
    case DType::kInt8: return at::kChar;
    case DType::kInt16: return at::kShort;
    case DType::kInt32: return at::kInt;
    case DType::kInt64: return at::kLong;
    case DType::kUInt8: return at::kByte;
    case DType::kUInt16: return at::kUInt16;
    case DType::kUInt32: return at::kUInt32;
    case DType::kUInt64: return at::kUInt64;
    case DType::kBool: return at::kBool;
    case DType::kString: return std::nullopt;
  }
  return std::nullopt;
}

// A c10::Error's message without its C++ backtrace.
std::string Message(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

}  // namespace

Status CheckAotiBytes(std::string_view bytes, const std::string& what) {
  if (bytes.empty()) return DataLoss(what + " is empty, not an AOTInductor package");
  if (bytes.size() < 4 || bytes.substr(0, 4) != std::string_view("PK\x03\x04", 4)) {
    return DataLoss(what + " is not an AOTInductor package: not a zip archive");
  }
  return Status::Ok();
}

struct TorchAotiModel::Runtime {
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  std::vector<at::ScalarType> input_types;
  std::vector<std::optional<at::ScalarType>> output_types;
};

TorchAotiModel::TorchAotiModel(std::string path, std::vector<Signature> signatures, std::unique_ptr<Runtime> runtime)
    : Model(std::move(path), std::move(signatures)), runtime_(std::move(runtime)) {}

TorchAotiModel::~TorchAotiModel() = default;

StatusOr<std::unique_ptr<TorchAotiModel>> TorchAotiModel::Load(const std::string& path, const LoadOptions& options,
                                                               Signature signature) {
  SERVEKIT_RETURN_IF_ERROR(CheckLoadOptions(options));
  if (IsDirectory(path)) return InvalidArgument(path + " is a directory, not an AOTInductor package (.pt2)");
  if (!IsRegularFile(path)) return NotFound("no AOTInductor package at " + path + ": no such file");
  SERVEKIT_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  SERVEKIT_RETURN_IF_ERROR(CheckAotiBytes(bytes, path));
  if (options.device == Device::kGpu) {
    return FailedPrecondition("device 'gpu' requested for " + path +
                              ", but servekit runs AOTInductor packages compiled for the CPU only");
  }
  auto runtime = std::make_unique<Runtime>();
  for (const auto& in : signature.inputs) {
    const auto type = ToTorch(in.dtype);
    if (!type || in.unknown_rank) {
      return Unimplemented(path + ": input '" + in.name + "' (" + SpecToString(in) +
                           ") cannot be fed to an AOTInductor package");
    }
    runtime->input_types.push_back(*type);
  }
  for (const auto& out : signature.outputs) runtime->output_types.push_back(ToTorch(out.dtype));
  try {
    runtime->loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
  } catch (const std::exception& e) {  // c10::Error and anything under it
    return DataLoss("libtorch could not load the AOTInductor package " + path + ": " + Message(e));
  }
  std::vector<Signature> signatures;
  signatures.push_back(std::move(signature));
  return std::unique_ptr<TorchAotiModel>(new TorchAotiModel(path, std::move(signatures), std::move(runtime)));
}

namespace {

// Outputs up to this size are copied into the caller's (reusable) output tensors:
// cheaper than keeping libtorch's result alive behind a view (a shared at::Tensor
// and a shape per output, ~0.2 us per call on the zoo MLP, measured). Larger ones
// are views.
constexpr size_t kCopiedOutputBytes = 64 << 10;

// An at::Tensor over a caller's numeric tensor (libtorch only reads inputs).
at::Tensor FromBlob(const Tensor& t, at::ScalarType type) {
  // from_blob wants a non-const pointer, and some pointer even for no bytes.
  static float empty_storage = 0;
  void* data = t.byte_size() > 0 ? const_cast<void*>(t.data()) : &empty_storage;
  return torch::from_blob(data, at::IntArrayRef(t.shape()), at::TensorOptions().dtype(type).device(at::kCPU));
}

// Per thread, the feeds of that thread's last call to a package, as at::Tensors
// over the caller's bytes. A from_blob tensor is only (address, shape, dtype): one
// made for an earlier call is interchangeable with a new one while the caller feeds
// the same buffers with the same shapes again (a serving loop, a benchmark), which
// saves a TensorImpl and its storage per input and call. Nothing here owns or reads
// caller memory between calls.
class FeedCache {
 public:
  const std::vector<at::Tensor>& Get(const void* owner, const std::vector<at::ScalarType>& types,
                                     const std::vector<const Tensor*>& inputs) {
    if (owner != owner_ || feeds_.size() != inputs.size()) {
      owner_ = owner;
      feeds_.assign(inputs.size(), at::Tensor());
      keys_.assign(inputs.size(), Key{});
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& t = *inputs[i];
      Key& key = keys_[i];
      if (key.data != nullptr && key.data == t.data() && key.shape == t.shape()) continue;
      key = Key{};  // not reusable until made (a throw leaves it so)
      feeds_[i] = FromBlob(t, types[i]);
      if (t.byte_size() > 0) key = Key{t.data(), t.shape()};
    }
    return feeds_;
  }

 private:
  struct Key {
    const void* data = nullptr;  // nullptr: never matches
    Shape shape;
  };
  const void* owner_ = nullptr;
  std::vector<at::Tensor> feeds_;
  std::vector<Key> keys_;
};

}  // namespace

Status TorchAotiModel::RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                                  OutputSlots* outputs) const {
  const Signature& signature = signatures()[endpoint_index];
  std::vector<at::Tensor> results;
  try {
    thread_local FeedCache feed_cache;
    results = runtime_->loader->run(feed_cache.Get(runtime_.get(), runtime_->input_types, inputs));
  } catch (const std::exception& e) {
    return Internal("libtorch failed to run " + path() + " endpoint '" + signature.name + "': " + Message(e));
  }
  if (results.size() != signature.outputs.size()) {
    return Internal(path() + " endpoint '" + signature.name + "' returned " + std::to_string(results.size()) +
                    " outputs, the signature has " + std::to_string(signature.outputs.size()));
  }
  for (size_t i = 0; i < results.size(); ++i) {
    const TensorSpec& spec = signature.outputs[i];
    at::Tensor& out = results[i];
    if (out.device() != at::kCPU) out = out.to(at::kCPU);
    if (runtime_->output_types[i] != out.scalar_type()) {
      return Internal(path() + " endpoint '" + signature.name + "' output '" + spec.name + "': the package returned " +
                      std::string(c10::toString(out.scalar_type())) + ", the signature says " + DTypeName(spec.dtype));
    }
    if (!spec.unknown_rank && static_cast<size_t>(out.dim()) != spec.dims.size()) {
      return Internal(path() + " endpoint '" + signature.name + "' output '" + spec.name + "': the package returned rank " +
                      std::to_string(out.dim()) + ", the signature says " + SpecToString(spec));
    }
    if (!out.is_contiguous()) out = out.contiguous();
    const size_t bytes = out.nbytes();
    thread_local Shape shape;  // Run never re-enters on one thread
    shape.assign(out.sizes().begin(), out.sizes().end());
    if (bytes <= kCopiedOutputBytes) {
      SERVEKIT_ASSIGN_OR_RETURN(Tensor * copy, outputs->Writable(i, spec.dtype, shape));
      if (copy->byte_size() != bytes) {
        return Internal(path() + " endpoint '" + signature.name + "' output '" + spec.name + "': " +
                        std::to_string(bytes) + " bytes for " + copy->Describe());
      }
      if (bytes > 0) std::memcpy(copy->mutable_data(), out.data_ptr(), bytes);
      continue;
    }
    // A view unless the bytes are shared with an input or the model (a constant).
    const bool shared = out.storage().use_count() > 1 || AliasesInput(out.data_ptr(), inputs);
    if (shared) out = out.clone();
    void* data = out.data_ptr();
    auto owner = std::make_shared<at::Tensor>(std::move(out));
    SERVEKIT_ASSIGN_OR_RETURN(Tensor view,
                              Tensor::View(spec.dtype, shape, data, bytes, std::shared_ptr<const void>(owner, data)));
    outputs->Set(i, std::move(view));
  }
  return Status::Ok();
}

// ---- BareLoop -------------------------------------------------------------------

namespace {

class AotiBareLoop final : public BareLoop {
 public:
  explicit AotiBareLoop(torch::inductor::AOTIModelPackageLoader* loader) : loader_(loader) {}

  Status RunOnce() override {
    try {
      std::vector<at::Tensor> outputs = loader_->run(feeds_);
      return Status::Ok();
    } catch (const std::exception& e) {
      return Internal("bare AOTInductor run failed: " + Message(e));
    }
  }

  std::vector<at::Tensor> feeds_;
  std::vector<Tensor> keep_;  // owns the bytes the feeds view

 private:
  torch::inductor::AOTIModelPackageLoader* loader_;
};

}  // namespace

StatusOr<std::unique_ptr<BareLoop>> TorchAotiModel::MakeBareLoop(const std::vector<NamedTensor>& inputs) const {
  std::vector<const Tensor*> ordered;
  SERVEKIT_RETURN_IF_ERROR(CheckFeeds(signatures()[0], inputs, &ordered));
  auto loop = std::make_unique<AotiBareLoop>(runtime_->loader.get());
  try {
    for (size_t i = 0; i < ordered.size(); ++i) {
      loop->keep_.push_back(*ordered[i]);
      loop->feeds_.push_back(FromBlob(loop->keep_.back(), runtime_->input_types[i]));
    }
  } catch (const std::exception& e) {
    return Internal("libtorch could not make the bare loop's inputs for " + path() + ": " + Message(e));
  }
  return std::unique_ptr<BareLoop>(std::move(loop));
}

}  // namespace servekit
