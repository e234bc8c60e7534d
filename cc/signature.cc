#include "cc/signature.h"

namespace servekit {

std::string DimToString(const Dim& dim) {
  if (dim.is_static()) return std::to_string(dim.size);
  return dim.symbol.empty() ? "?" : dim.symbol;
}

std::string SpecToString(const TensorSpec& spec) {
  std::string s = DTypeName(spec.dtype);
  if (spec.unknown_rank) return s + "[...]";
  s += "[";
  for (size_t i = 0; i < spec.dims.size(); ++i) {
    if (i) s += ",";
    s += DimToString(spec.dims[i]);
  }
  return s + "]";
}

const Signature* FindSignature(const std::vector<Signature>& signatures, const std::string& name) {
  for (const auto& s : signatures) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

const TensorSpec* FindSpec(const std::vector<TensorSpec>& specs, const std::string& name) {
  for (const auto& s : specs) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

}  // namespace servekit
