// The AOTInductor loader as a plugin: libservekit_torch_aoti.so.
//
// TorchAotiModel links libtorch (libtorch_cpu.so alone is ~500 MB mapped), which costs
// every process that links it ~0.5 s and ~100 MB at start-up, whatever it loads. So
// no binary links it: the loader (LoadModel, //cc:loader) opens the plugin on the
// first .pt2 package, with dlopen(RTLD_NOW | RTLD_LOCAL) (never RTLD_GLOBAL: its
// symbols stay its own, as the TensorFlow libraries' must), and calls its one
// exported function, servekit_torch_aoti_plugin_v1(). The plugin is a cc_binary
// beside each binary that may load packages (servekit_torch_aoti_plugin() in
// build_defs.bzl, a data dependency of that binary); SERVEKIT_TORCH_AOTI_PLUGIN
// names another file. A binary that links //cc:torch_aoti_plugin itself (a test)
// uses it directly. Plugin and loader are built from the same sources: the ABI
// number and a layout fingerprint of the types that cross catch a mismatch.
#ifndef SERVEKIT_CC_TORCH_AOTI_PLUGIN_H_
#define SERVEKIT_CC_TORCH_AOTI_PLUGIN_H_

#include <cstdint>
#include <memory>
#include <string>

#include "cc/model.h"

namespace servekit {

inline constexpr char kTorchAotiPluginFile[] = "libservekit_torch_aoti.so";
inline constexpr char kTorchAotiPluginEnv[] = "SERVEKIT_TORCH_AOTI_PLUGIN";
inline constexpr char kTorchAotiPluginSymbol[] = "servekit_torch_aoti_plugin_v1";
// Bump when Model's virtual functions or TorchAotiPlugin change.
inline constexpr uint32_t kTorchAotiPluginAbi = 2;

// The sizes of the types that cross between loader and plugin, as one number.
constexpr uint64_t TorchAotiPluginLayout() {
  uint64_t h = 1469598103934665603ull;
  for (uint64_t size : {sizeof(std::string), sizeof(Status), sizeof(Tensor), sizeof(NamedTensor), sizeof(TensorSpec),
                        sizeof(Signature), sizeof(LoadOptions), sizeof(OutputSlots), sizeof(Model),
                        sizeof(StatusOr<std::unique_ptr<Model>>)}) {
    h = (h ^ size) * 1099511628211ull;
  }
  return h;
}

struct TorchAotiPlugin {
  uint32_t abi;     // kTorchAotiPluginAbi
  uint64_t layout;  // TorchAotiPluginLayout()
  // TorchAotiModel::Load.
  StatusOr<std::unique_ptr<Model>> (*load)(const std::string& path, const LoadOptions& options,
                                           const Signature& signature);
};

// Loads the AOTInductor package at `path` through the plugin (opened on first use);
// FailedPrecondition, naming where it looked, when there is no plugin to open.
StatusOr<std::unique_ptr<Model>> LoadTorchAotiPackage(const std::string& path, const LoadOptions& options,
                                                      const Signature& signature);

// Where the plugin was opened from ("linked in" when the binary links it), or why it
// could not be; opens it if nobody has yet.
StatusOr<std::string> TorchAotiPluginLocation();

}  // namespace servekit

extern "C" {
// The plugin's one export.
const servekit::TorchAotiPlugin* servekit_torch_aoti_plugin_v1();
}

#endif  // SERVEKIT_CC_TORCH_AOTI_PLUGIN_H_
