#include "cc/torch_aoti_model.h"

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
  try {
    runtime->loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
  } catch (const std::exception& e) {  // c10::Error and anything under it
    return DataLoss("libtorch could not load the AOTInductor package " + path + ": " + Message(e));
  }
  std::vector<Signature> signatures;
  signatures.push_back(std::move(signature));
  return std::unique_ptr<TorchAotiModel>(new TorchAotiModel(path, std::move(signatures), std::move(runtime)));
}

Status TorchAotiModel::RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                                  std::vector<NamedTensor>* outputs) const {
  const Signature& signature = signatures()[endpoint_index];
  const std::string where = path() + " endpoint '" + signature.name + "'";
  std::vector<at::Tensor> results;
  try {
    std::vector<at::Tensor> feeds;
    feeds.reserve(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& t = *inputs[i];
      const auto options = at::TensorOptions().dtype(runtime_->input_types[i]).device(at::kCPU);
      // libtorch only reads inputs; from_blob wants a non-const pointer.
      static float empty_storage = 0;
      void* data = t.byte_size() > 0 ? const_cast<void*>(t.data()) : &empty_storage;
      feeds.push_back(torch::from_blob(data, at::IntArrayRef(t.shape()), options));
    }
    results = runtime_->loader->run(feeds);
  } catch (const std::exception& e) {
    return Internal("libtorch failed to run " + where + ": " + Message(e));
  }
  if (results.size() != signature.outputs.size()) {
    return Internal(where + " returned " + std::to_string(results.size()) + " outputs, the signature has " +
                    std::to_string(signature.outputs.size()));
  }
  for (size_t i = 0; i < results.size(); ++i) {
    const TensorSpec& spec = signature.outputs[i];
    const std::string tensor = where + " output '" + spec.name + "'";
    at::Tensor out = results[i];
    if (out.device() != at::kCPU) out = out.to(at::kCPU);
    if (ToTorch(spec.dtype) != out.scalar_type()) {
      return Internal(tensor + ": the package returned " + std::string(c10::toString(out.scalar_type())) +
                      ", the signature says " + DTypeName(spec.dtype));
    }
    if (!spec.unknown_rank && static_cast<size_t>(out.dim()) != spec.dims.size()) {
      return Internal(tensor + ": the package returned rank " + std::to_string(out.dim()) + ", the signature says " +
                      SpecToString(spec));
    }
    out = out.contiguous();
    const Shape shape(out.sizes().begin(), out.sizes().end());
    const size_t bytes = out.nbytes();
    // A view unless the bytes are shared with an input or the model (a constant).
    const bool shared = out.storage().use_count() > 1 || AliasesInput(out.data_ptr(), inputs);
    auto owner = std::make_shared<at::Tensor>(shared ? out.clone() : out);
    SERVEKIT_ASSIGN_OR_RETURN(Tensor view, Tensor::View(spec.dtype, shape, owner->data_ptr(), bytes,
                                                        std::shared_ptr<const void>(owner, owner->data_ptr())));
    outputs->push_back(NamedTensor{spec.name, std::move(view)});
  }
  return Status::Ok();
}

}  // namespace servekit
