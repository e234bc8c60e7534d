// Conversions between NumPy arrays and servekit Tensors for the Python module.
//
// Inputs become zero-copy views when the array is C-contiguous, aligned and
// little-endian (else a converted copy); strings (bytes, str or object arrays)
// become string tensors. Outputs become arrays that view the runtime's result
// buffer, kept alive by a capsule (no copy); strings become object arrays of bytes.
#ifndef SERVEKIT_CC_PYTHON_NUMPY_CONVERT_H_
#define SERVEKIT_CC_PYTHON_NUMPY_CONVERT_H_

#include <string>
#include <vector>

#include "cc/tensor.h"
#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"

namespace servekit::python {

// A tensor for `value` (anything np.asarray accepts). `keep_alive` receives the array
// whose memory the tensor views; it must outlive every use of the tensor. Throws
// TypeError/ValueError naming `name` for unsupported arrays.
Tensor TensorFromPython(const pybind11::handle& value, const std::string& name, std::vector<pybind11::object>* keep_alive);

// A NumPy array for `tensor` (which it keeps alive; no copy for numeric tensors).
pybind11::object TensorToPython(Tensor tensor);

// The NumPy dtype of a servekit DType (bfloat16 needs the ml_dtypes package).
pybind11::dtype NumpyDType(DType dtype);

}  // namespace servekit::python

#endif  // SERVEKIT_CC_PYTHON_NUMPY_CONVERT_H_
