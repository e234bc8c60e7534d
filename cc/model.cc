#include "cc/model.h"

#include <cctype>

namespace servekit {

const char* FormatName(ModelFormat format) {
  return format == ModelFormat::kOnnx ? "onnx" : "tf_saved_model";
}

std::optional<ModelFormat> FormatFromName(std::string_view name) {
  if (name == "tf_saved_model") return ModelFormat::kTfSavedModel;
  if (name == "onnx") return ModelFormat::kOnnx;
  return std::nullopt;
}

const char* DeviceName(Device device) { return device == Device::kGpu ? "gpu" : "cpu"; }

std::optional<Device> DeviceFromName(std::string_view name) {
  std::string lower;
  for (char c : name) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (lower == "cpu") return Device::kCpu;
  if (lower == "gpu" || lower == "cuda") return Device::kGpu;
  return std::nullopt;
}

const Signature* Model::FindEndpoint(const std::string& endpoint) const {
  return FindSignature(signatures_, endpoint);
}

std::string FeedMismatch(const TensorSpec& spec, const Tensor& tensor) {
  bool ok = tensor.dtype() == spec.dtype;
  if (ok && !spec.unknown_rank) {
    ok = static_cast<size_t>(tensor.rank()) == spec.dims.size();
    for (size_t i = 0; ok && i < spec.dims.size(); ++i) {
      if (spec.dims[i].is_static() && spec.dims[i].size != tensor.shape()[i]) ok = false;
    }
  }
  if (ok) return std::string();
  return "expected " + SpecToString(spec) + ", got " + tensor.Describe();
}

Status Model::CheckFeeds(const Signature& signature, const std::vector<NamedTensor>& inputs,
                         std::vector<const Tensor*>* ordered) const {
  const std::string where = "endpoint '" + signature.name + "'";
  ordered->assign(signature.inputs.size(), nullptr);
  for (const auto& feed : inputs) {
    size_t index = signature.inputs.size();
    for (size_t i = 0; i < signature.inputs.size(); ++i) {
      if (signature.inputs[i].name == feed.name) {
        index = i;
        break;
      }
    }
    if (index == signature.inputs.size()) {
      std::string known;
      for (const auto& spec : signature.inputs) known += (known.empty() ? "'" : ", '") + spec.name + "'";
      return InvalidArgument(where + " has no input '" + feed.name + "'; its inputs are: " + known);
    }
    if ((*ordered)[index] != nullptr) {
      return InvalidArgument(where + " input '" + feed.name + "' is fed twice");
    }
    const std::string mismatch = FeedMismatch(signature.inputs[index], feed.tensor);
    if (!mismatch.empty()) return InvalidArgument(where + " input '" + feed.name + "': " + mismatch);
    (*ordered)[index] = &feed.tensor;
  }
  for (size_t i = 0; i < signature.inputs.size(); ++i) {
    if ((*ordered)[i] == nullptr) {
      return InvalidArgument(where + " input '" + signature.inputs[i].name + "' (" +
                             SpecToString(signature.inputs[i]) + ") is not fed");
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<NamedTensor>> Model::Run(const std::string& endpoint,
                                              const std::vector<NamedTensor>& inputs) const {
  size_t index = signatures_.size();
  for (size_t i = 0; i < signatures_.size(); ++i) {
    if (signatures_[i].name == endpoint) {
      index = i;
      break;
    }
  }
  if (index == signatures_.size()) {
    std::string known;
    for (const auto& s : signatures_) known += (known.empty() ? "'" : ", '") + s.name + "'";
    return NotFound("no endpoint '" + endpoint + "' in " + path_ + "; it has: " + known);
  }
  const Signature& signature = signatures_[index];
  std::vector<const Tensor*> ordered;
  SERVEKIT_RETURN_IF_ERROR(CheckFeeds(signature, inputs, &ordered));
  SERVEKIT_ASSIGN_OR_RETURN(std::vector<Tensor> outputs, RunChecked(index, ordered));
  if (outputs.size() != signature.outputs.size()) {
    return Internal("endpoint '" + endpoint + "' returned " + std::to_string(outputs.size()) +
                    " outputs, its signature has " + std::to_string(signature.outputs.size()));
  }
  std::vector<NamedTensor> named;
  named.reserve(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    named.push_back(NamedTensor{signature.outputs[i].name, std::move(outputs[i])});
  }
  return named;
}

bool AliasesInput(const void* inner, const std::vector<const Tensor*>& inputs) {
  const char* p = static_cast<const char*>(inner);
  for (const Tensor* t : inputs) {
    if (t->is_string() || t->byte_size() == 0) continue;
    const char* begin = static_cast<const char*>(t->data());
    if (p >= begin && p < begin + t->byte_size()) return true;
  }
  return false;
}

}  // namespace servekit
