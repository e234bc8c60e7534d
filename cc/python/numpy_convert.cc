#include "cc/python/numpy_convert.h"

#include <cstring>

namespace servekit::python {

namespace py = pybind11;

namespace {

constexpr int kAligned = 0x0100;  // NPY_ARRAY_ALIGNED

[[noreturn]] void Throw(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw py::error_already_set();
}

bool IsBFloat16(const py::dtype& dt) {
  return dt.kind() == 'V' && dt.itemsize() == 2 && py::str(dt.attr("name")).cast<std::string>() == "bfloat16";
}

// The DType of a numeric NumPy dtype, or nullopt.
std::optional<DType> NumericDType(const py::dtype& dt) {
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  if (kind == 'b' && size == 1) return DType::kBool;
  if (kind == 'f') {
    if (size == 2) return DType::kFloat16;
    if (size == 4) return DType::kFloat32;
    if (size == 8) return DType::kFloat64;
  }
  if (kind == 'i' || kind == 'u') {
    const bool u = kind == 'u';
    if (size == 1) return u ? DType::kUInt8 : DType::kInt8;
    if (size == 2) return u ? DType::kUInt16 : DType::kInt16;
    if (size == 4) return u ? DType::kUInt32 : DType::kInt32;
    if (size == 8) return u ? DType::kUInt64 : DType::kInt64;
  }
  if (IsBFloat16(dt)) return DType::kBFloat16;
  return std::nullopt;
}

Shape ShapeOf(const py::array& array) {
  return Shape(array.shape(), array.shape() + array.ndim());
}

Tensor StringsFromPython(const py::array& array, const std::string& name) {
  const py::dtype dt = array.dtype();
  const Shape shape = ShapeOf(array);
  std::vector<std::string> values;
  values.reserve(static_cast<size_t>(array.size()));
  if (dt.kind() == 'S') {
    // Fixed-width bytes: NumPy strips trailing NULs from each element; so do we.
    py::array contiguous = py::array::ensure(array, py::array::c_style);
    const size_t width = static_cast<size_t>(dt.itemsize());
    const char* data = static_cast<const char*>(contiguous.data());
    for (py::ssize_t i = 0; i < contiguous.size(); ++i) {
      size_t n = width;
      while (n > 0 && data[i * width + n - 1] == '\0') --n;
      values.emplace_back(data + i * width, n);
    }
  } else {
    // str (UTF-8 encoded) or object arrays of bytes/str.
    py::list items = array.attr("ravel")().attr("tolist")();
    for (const py::handle item : items) {
      if (PyBytes_Check(item.ptr())) {
        values.emplace_back(PyBytes_AS_STRING(item.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(item.ptr())));
      } else if (PyUnicode_Check(item.ptr())) {
        Py_ssize_t size = 0;
        const char* utf8 = PyUnicode_AsUTF8AndSize(item.ptr(), &size);
        if (utf8 == nullptr) throw py::error_already_set();
        values.emplace_back(utf8, static_cast<size_t>(size));
      } else {
        Throw(PyExc_TypeError, "input '" + name + "': a string tensor's elements must be bytes or str, not " +
                                   py::str(py::type::of(item).attr("__name__")).cast<std::string>());
      }
    }
  }
  auto t = Tensor::FromStrings(shape, std::move(values));
  if (!t.ok()) Throw(PyExc_ValueError, "input '" + name + "': " + t.status().message());
  return std::move(t).value();
}

}  // namespace

Tensor TensorFromPython(const py::handle& value, const std::string& name, std::vector<py::object>* keep_alive) {
  py::array array = py::array::ensure(value);
  if (!array) {
    PyErr_Clear();
    Throw(PyExc_TypeError, "input '" + name + "' is not array-like");
  }
  const py::dtype dt = array.dtype();
  const char kind = dt.kind();
  if (kind == 'S' || kind == 'U' || kind == 'O') return StringsFromPython(array, name);
  auto dtype = NumericDType(dt);
  if (!dtype) {
    Throw(PyExc_TypeError, "input '" + name + "' has NumPy dtype " + py::str(dt).cast<std::string>() +
                               ", which servekit does not support");
  }
  // Zero copy needs C order, alignment and little-endian bytes; anything else is
  // converted (one copy, same dtype).
  const bool native_order = dt.byteorder() != '>';
  const bool aligned = (py::detail::array_proxy(array.ptr())->flags & kAligned) != 0;
  if (!native_order) array = py::array(array.attr("astype")(dt.attr("newbyteorder")("<")));
  if (!(array.flags() & py::array::c_style) || !aligned) {
    array = py::array(py::module_::import("numpy").attr("array")(array, py::arg("order") = "C", py::arg("copy") = true));
  }
  auto t = Tensor::View(*dtype, ShapeOf(array), array.data(), static_cast<size_t>(array.nbytes()), nullptr);
  if (!t.ok()) Throw(PyExc_ValueError, "input '" + name + "': " + t.status().message());
  keep_alive->push_back(std::move(array));
  return std::move(t).value();
}

py::dtype NumpyDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return py::dtype("float16");
    case DType::kFloat32: return py::dtype::of<float>();
    case DType::kFloat64: return py::dtype::of<double>();
    case DType::kInt8: return py::dtype::of<int8_t>();
    case DType::kInt16: return py::dtype::of<int16_t>();
    case DType::kInt32: return py::dtype::of<int32_t>();
    case DType::kInt64: return py::dtype::of<int64_t>();
    case DType::kUInt8: return py::dtype::of<uint8_t>();
    case DType::kUInt16: return py::dtype::of<uint16_t>();
    case DType::kUInt32: return py::dtype::of<uint32_t>();
    case DType::kUInt64: return py::dtype::of<uint64_t>();
    case DType::kBool: return py::dtype::of<bool>();
    case DType::kBFloat16: {
      py::object ml_dtypes;
      try {
        ml_dtypes = py::module_::import("ml_dtypes");
      } catch (py::error_already_set&) {
        Throw(PyExc_ImportError, "a bfloat16 output needs the ml_dtypes package");
      }
      return py::dtype::from_args(ml_dtypes.attr("bfloat16"));
    }
    case DType::kString: return py::dtype("O");
  }
  return py::dtype("O");
}

py::object TensorToPython(Tensor tensor) {
  std::vector<py::ssize_t> shape(tensor.shape().begin(), tensor.shape().end());
  if (tensor.is_string()) {
    py::array out(py::dtype("O"), shape);
    auto** items = static_cast<PyObject**>(out.mutable_data());
    const auto& strings = tensor.strings();
    for (size_t i = 0; i < strings.size(); ++i) {
      PyObject* bytes = PyBytes_FromStringAndSize(strings[i].data(), static_cast<Py_ssize_t>(strings[i].size()));
      if (bytes == nullptr) throw py::error_already_set();
      Py_XDECREF(items[i]);
      items[i] = bytes;
    }
    return std::move(out);
  }
  const py::dtype dt = NumpyDType(tensor.dtype());
  if (tensor.byte_size() == 0) return py::array(dt, shape);
  // The capsule owns a copy of the Tensor (a shared reference to the result buffer).
  auto* owner = new Tensor(std::move(tensor));
  py::capsule base(owner, [](void* p) { delete static_cast<Tensor*>(p); });
  return py::array(dt, shape, {}, owner->data(), base);
}

}  // namespace servekit::python
