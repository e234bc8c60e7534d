// The plugin's side: servekit_torch_aoti_plugin_v1(), exported from
// libservekit_torch_aoti.so (or linked into a binary that wants no plugin).
#include "cc/torch_aoti_plugin.h"

#include "cc/torch_aoti_model.h"

namespace servekit {
namespace {

StatusOr<std::unique_ptr<Model>> Load(const std::string& path, const LoadOptions& options,
                                      const Signature& signature) {
  auto loaded = TorchAotiModel::Load(path, options, signature);
  if (!loaded.ok()) return loaded.status();
  return std::unique_ptr<Model>(std::move(loaded).value());
}

constexpr TorchAotiPlugin kPlugin = {kTorchAotiPluginAbi, TorchAotiPluginLayout(), &Load};

}  // namespace
}  // namespace servekit

extern "C" __attribute__((visibility("default"))) const servekit::TorchAotiPlugin* servekit_torch_aoti_plugin_v1() {
  return &servekit::kPlugin;
}
