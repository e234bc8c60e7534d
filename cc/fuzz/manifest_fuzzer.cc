// libFuzzer target: manifest.json on arbitrary bytes. Every artifact's check reads it,
// and an AOTInductor package's signature comes from it (loader.h,
// AotiSignatureFromManifest): whatever parses must be usable, what does not must be
// a Status.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cc/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto manifest =
      servekit::ParseManifest(std::string_view(reinterpret_cast<const char*>(data), size), "/fuzz/export");
  if (!manifest.ok()) return 0;
  // What a verifier does with a manifest that parsed.
  for (const auto& endpoint : manifest->endpoints) {
    for (const auto& in : endpoint.signature.inputs) (void)servekit::SpecToString(in);
    if (manifest->FindEndpoint(endpoint.signature.name) == nullptr) std::abort();
    for (const auto& out : endpoint.signature.outputs) (void)endpoint.IsStochasticOutput(out.name);
  }
  for (const auto& artifact : manifest->artifacts) {
    if (manifest->FindArtifact(artifact.format) == nullptr) std::abort();
    (void)manifest->Resolve(artifact.path);
  }
  for (const auto& reference : manifest->reference) {
    (void)manifest->FindEndpoint(reference.endpoint);
    for (const auto& [name, path] : reference.inputs) (void)manifest->Resolve(path);
  }
  for (servekit::DType dtype : {servekit::DType::kFloat32, servekit::DType::kInt64, servekit::DType::kString}) {
    (void)manifest->ToleranceFor(dtype);
  }
  return 0;
}
