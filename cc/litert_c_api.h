// The part of LiteRT's C API (litert/c/*.h in google-ai-edge/LiteRT) that servekit
// calls, declared here because the ai-edge-litert wheel ships libLiteRt.so without
// headers. Each function is exported by the wheel's libLiteRt.so 2.3.0 (checked
// with `nm -D`) with the signature of LiteRT 2.x's headers:
//   litert_common.h        LiteRtStatus, LiteRtParamIndex, hardware accelerators
//   litert_environment.h   LiteRtCreateEnvironment / LiteRtDestroyEnvironment
//   litert_model.h         LiteRtCreateModelFromFile (environment first, 2.x),
//                          signatures, their tensors and ranked tensor types
//   litert_options.h       LiteRtCreateOptions, LiteRtSetOptionsHardwareAccelerators
//   litert_compiled_model.h  LiteRtCreateCompiledModel, ...ResizeInputTensor, Run,
//                          LiteRtGetCompiledModelOutputTensorLayouts (the outputs'
//                          shapes a run made)
//   litert_tensor_buffer.h LiteRtCreateTensorBufferFromHostMemory (64-byte aligned)
// LiteRtLayout is the 2.x layout the library writes (72 bytes with the element
// type, measured): rank:7 and has_strides:1 bit-fields, then 8 dims and 8 strides;
// LiteRtGetCompiledModelOutputTensorLayouts fills an array of them at a 68-byte
// stride (measured: two outputs' layouts end at byte 80), asserted below.
// Only cc/litert_model.cc includes this file.
#ifndef SERVEKIT_CC_LITERT_C_API_H_
#define SERVEKIT_CC_LITERT_C_API_H_

#include <cstddef>
#include <cstdint>

extern "C" {

typedef int LiteRtStatus;  // enum LiteRtStatus; 0 is kLiteRtStatusOk
typedef size_t LiteRtParamIndex;
typedef struct LiteRtEnvironmentT* LiteRtEnvironment;
typedef struct LiteRtModelT* LiteRtModel;
typedef struct LiteRtSignatureT* LiteRtSignature;
typedef struct LiteRtTensorT* LiteRtTensor;
typedef struct LiteRtOptionsT* LiteRtOptions;
typedef struct LiteRtCompiledModelT* LiteRtCompiledModel;
typedef struct LiteRtTensorBufferT* LiteRtTensorBuffer;
typedef void (*LiteRtHostMemoryDeallocator)(void* addr);

enum : LiteRtStatus { kLiteRtStatusOk = 0 };
enum : int { kLiteRtHwAcceleratorCpu = 1 << 0 };
// LiteRtTensorTypeId
enum : int { kLiteRtRankedTensorType = 0, kLiteRtUnrankedTensorType = 1 };
// LiteRtElementType: TfLiteType's numbers.
enum : int {
  kLiteRtElementTypeFloat32 = 1, kLiteRtElementTypeInt32 = 2, kLiteRtElementTypeUInt8 = 3,
  kLiteRtElementTypeInt64 = 4, kLiteRtElementTypeTfString = 5, kLiteRtElementTypeBool = 6,
  kLiteRtElementTypeInt16 = 7, kLiteRtElementTypeInt8 = 9, kLiteRtElementTypeFloat16 = 10,
  kLiteRtElementTypeFloat64 = 11, kLiteRtElementTypeUInt64 = 13, kLiteRtElementTypeUInt32 = 16,
  kLiteRtElementTypeUInt16 = 17, kLiteRtElementTypeBFloat16 = 19,
};

#define SERVEKIT_LITERT_TENSOR_MAX_RANK 8
// Host memory handed to LiteRT must be aligned to this (LITERT_HOST_MEMORY_BUFFER_ALIGNMENT).
#define SERVEKIT_LITERT_HOST_MEMORY_ALIGNMENT 64

typedef struct {
  unsigned int rank : 7;
  bool has_strides : 1;
  int32_t dimensions[SERVEKIT_LITERT_TENSOR_MAX_RANK];  // < 0: dynamic
  uint32_t strides[SERVEKIT_LITERT_TENSOR_MAX_RANK];
} LiteRtLayout;

typedef struct {
  int element_type;  // LiteRtElementType
  LiteRtLayout layout;
} LiteRtRankedTensorType;

LiteRtStatus LiteRtCreateEnvironment(int num_options, const void* options, LiteRtEnvironment* environment);
void LiteRtDestroyEnvironment(LiteRtEnvironment environment);

LiteRtStatus LiteRtCreateModelFromFile(LiteRtEnvironment environment, const char* filename, LiteRtModel* model);
void LiteRtDestroyModel(LiteRtModel model);
LiteRtStatus LiteRtGetNumModelSignatures(LiteRtModel model, LiteRtParamIndex* num_signatures);
LiteRtStatus LiteRtGetModelSignature(LiteRtModel model, LiteRtParamIndex signature_index,
                                     LiteRtSignature* signature);
LiteRtStatus LiteRtGetSignatureKey(LiteRtSignature signature, const char** signature_key);
LiteRtStatus LiteRtGetNumSignatureInputs(LiteRtSignature signature, LiteRtParamIndex* num_inputs);
LiteRtStatus LiteRtGetSignatureInputName(LiteRtSignature signature, LiteRtParamIndex input_idx,
                                         const char** input_name);
LiteRtStatus LiteRtGetSignatureInputTensorByIndex(LiteRtSignature signature, LiteRtParamIndex input_idx,
                                                  LiteRtTensor* tensor);
LiteRtStatus LiteRtGetNumSignatureOutputs(LiteRtSignature signature, LiteRtParamIndex* num_outputs);
LiteRtStatus LiteRtGetSignatureOutputName(LiteRtSignature signature, LiteRtParamIndex output_idx,
                                          const char** output_name);
LiteRtStatus LiteRtGetSignatureOutputTensorByIndex(LiteRtSignature signature, LiteRtParamIndex output_idx,
                                                   LiteRtTensor* tensor);
LiteRtStatus LiteRtGetTensorTypeId(LiteRtTensor tensor, int* type_id);
LiteRtStatus LiteRtGetRankedTensorType(LiteRtTensor tensor, LiteRtRankedTensorType* ranked_tensor_type);

LiteRtStatus LiteRtCreateOptions(LiteRtOptions* options);
void LiteRtDestroyOptions(LiteRtOptions options);
LiteRtStatus LiteRtSetOptionsHardwareAccelerators(LiteRtOptions options, int hardware_accelerators);

LiteRtStatus LiteRtCreateCompiledModel(LiteRtEnvironment environment, LiteRtModel model, LiteRtOptions options,
                                       LiteRtCompiledModel* compiled_model);
void LiteRtDestroyCompiledModel(LiteRtCompiledModel compiled_model);
LiteRtStatus LiteRtCompiledModelResizeInputTensor(LiteRtCompiledModel compiled_model,
                                                  LiteRtParamIndex signature_index, LiteRtParamIndex input_index,
                                                  const int* dims, size_t dims_size);
// Fills layouts[0, num_layouts), num_layouts being the signature's output count.
// update_allocation first propagates the inputs' shapes (TFLite's AllocateTensors):
// on a compiled model that has run with buffers bound, that corrupts its next runs
// (measured on LiteRT 2.3.0), so servekit only reads the shapes a run made (false).
LiteRtStatus LiteRtGetCompiledModelOutputTensorLayouts(LiteRtCompiledModel compiled_model,
                                                       LiteRtParamIndex signature_index, size_t num_layouts,
                                                       LiteRtLayout* layouts, bool update_allocation);
LiteRtStatus LiteRtRunCompiledModel(LiteRtCompiledModel compiled_model, LiteRtParamIndex signature_index,
                                    size_t num_input_buffers, LiteRtTensorBuffer* input_buffers,
                                    size_t num_output_buffers, LiteRtTensorBuffer* output_buffers);

LiteRtStatus LiteRtCreateTensorBufferFromHostMemory(const LiteRtRankedTensorType* tensor_type,
                                                    void* host_buffer_addr, size_t size,
                                                    LiteRtHostMemoryDeallocator deallocator,
                                                    LiteRtTensorBuffer* buffer);
void LiteRtDestroyTensorBuffer(LiteRtTensorBuffer buffer);

}  // extern "C"

static_assert(sizeof(LiteRtRankedTensorType) == 72, "LiteRtRankedTensorType is 72 bytes in LiteRT 2.x");
static_assert(sizeof(LiteRtLayout) == 68, "LiteRtLayout is 68 bytes in LiteRT 2.x");

#endif  // SERVEKIT_CC_LITERT_C_API_H_
