// Filtered k-NN over an hnswlib index without a Python call per candidate.
//
// hnswlib's Python binding takes a filter only as a Python callable: the C++ graph walk then
// calls back into Python (and takes the GIL) for every candidate it visits. This module
// walks the same index object (an `hnswlib.Index` made by the hnswlib 0.8.0 binding) with a
// byte mask checked inside the walk, through hnswlib's own `searchKnn` and its
// `BaseFilterFunctor`, compiled from the same 0.8.0 headers (vendored in ./hnswlib).
//
// Reaching the index: a pybind11 instance keeps its C++ value pointer right after the
// PyObject header (simple layout), and that value is the binding's `Index<float>`, mirrored
// by `BindingIndex` below field for field. `probe` reads those fields back so that Python
// can compare them with what the binding itself reports before trusting this path
// (dvecdb_node.storage.native); any disagreement turns the path off.
//
// Thread safety is the caller's: like knn_query, a search must not overlap add_items,
// mark_deleted or resize_index on the same index. The GIL is released during the walk.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "hnswlib/hnswlib.h"

namespace {

// hnswlib 0.8.0 python_bindings/bindings.cpp `class Index<float, float>` (no virtual members).
struct BindingIndex {
    std::string space_name;
    int dim;
    size_t seed;
    size_t default_ef;
    bool index_inited;
    bool ep_added;
    bool normalize;
    int num_threads_default;
    hnswlib::labeltype cur_l;
    hnswlib::HierarchicalNSW<float>* appr_alg;
    hnswlib::SpaceInterface<float>* l2space;
};

class MaskFilter : public hnswlib::BaseFilterFunctor {
 public:
    MaskFilter(const uint8_t* mask, size_t size) : mask_(mask), size_(size) {}
    bool operator()(hnswlib::labeltype label) override {
        return label < size_ && mask_[label] != 0;
    }

 private:
    const uint8_t* mask_;
    size_t size_;
};

BindingIndex* binding_of(PyObject* obj) {
    if (std::strcmp(Py_TYPE(obj)->tp_name, "hnswlib.Index") != 0) {
        PyErr_SetString(PyExc_TypeError, "expected an hnswlib.Index");
        return nullptr;
    }
    auto* value = *reinterpret_cast<BindingIndex**>(reinterpret_cast<char*>(obj) + sizeof(PyObject));
    if (value == nullptr) {
        PyErr_SetString(PyExc_ValueError, "the hnswlib.Index holds no index");
        return nullptr;
    }
    return value;
}

// Buffers released on every path out of a function.
struct Buffers {
    std::vector<Py_buffer*> held;
    ~Buffers() {
        for (Py_buffer* b : held) PyBuffer_Release(b);
    }
    bool get(PyObject* obj, Py_buffer* view, int flags) {
        if (PyObject_GetBuffer(obj, view, flags) != 0) return false;
        held.push_back(view);
        return true;
    }
};

PyObject* probe(PyObject*, PyObject* args) {
    PyObject* obj;
    if (!PyArg_ParseTuple(args, "O", &obj)) return nullptr;
    BindingIndex* index = binding_of(obj);
    if (index == nullptr) return nullptr;
    hnswlib::HierarchicalNSW<float>* alg = index->appr_alg;
    if (alg == nullptr) {
        return Py_BuildValue("(sinnnOO)", index->space_name.c_str(), index->dim, (Py_ssize_t)0,
                             (Py_ssize_t)0, (Py_ssize_t)0, index->normalize ? Py_True : Py_False,
                             Py_False);
    }
    return Py_BuildValue("(sinnnOO)", index->space_name.c_str(), index->dim,
                         (Py_ssize_t)alg->max_elements_, (Py_ssize_t)alg->cur_element_count.load(),
                         (Py_ssize_t)alg->ef_, index->normalize ? Py_True : Py_False, Py_True);
}

// filtered_knn(index, queries, k, mask, labels_out, distances_out) -> fewest hits in a row
//   queries: C-contiguous float32 (rows x dim); mask: bytes, nonzero = allowed, by label;
//   labels_out: uint64 (rows x k); distances_out: float32 (rows x k), nearest first.
PyObject* filtered_knn(PyObject*, PyObject* args) {
    PyObject *obj, *queries_obj, *mask_obj, *labels_obj, *dists_obj;
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "OOnOOO", &obj, &queries_obj, &k, &mask_obj, &labels_obj,
                          &dists_obj))
        return nullptr;
    BindingIndex* index = binding_of(obj);
    if (index == nullptr) return nullptr;
    hnswlib::HierarchicalNSW<float>* alg = index->appr_alg;
    if (alg == nullptr) {
        PyErr_SetString(PyExc_ValueError, "the index is not initialised");
        return nullptr;
    }
    Buffers buffers;
    Py_buffer queries, mask, labels, dists;
    if (!buffers.get(queries_obj, &queries, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) ||
        !buffers.get(mask_obj, &mask, PyBUF_C_CONTIGUOUS) ||
        !buffers.get(labels_obj, &labels, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) ||
        !buffers.get(dists_obj, &dists, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE))
        return nullptr;
    const size_t dim = static_cast<size_t>(index->dim);
    if (k <= 0 || queries.itemsize != 4 || std::strcmp(queries.format, "f") != 0 ||
        queries.len % (4 * dim) != 0) {
        PyErr_SetString(PyExc_ValueError, "queries must be float32 rows of the index dimension");
        return nullptr;
    }
    const size_t rows = queries.len / (4 * dim);
    const size_t kk = static_cast<size_t>(k);
    if (static_cast<size_t>(labels.len) != rows * kk * 8 ||
        static_cast<size_t>(dists.len) != rows * kk * 4) {
        PyErr_SetString(PyExc_ValueError, "output buffers must hold rows x k results");
        return nullptr;
    }
    const auto* data = static_cast<const float*>(queries.buf);
    auto* out_labels = static_cast<uint64_t*>(labels.buf);
    auto* out_dists = static_cast<float*>(dists.buf);
    MaskFilter filter(static_cast<const uint8_t*>(mask.buf), static_cast<size_t>(mask.len));
    size_t fewest = kk;
    bool failed = false;
    std::string error;
    Py_BEGIN_ALLOW_THREADS
    std::vector<float> normalised(index->normalize ? dim : 0);
    try {
        for (size_t row = 0; row < rows; ++row) {
            const float* query = data + row * dim;
            if (index->normalize) {  // as the binding does for "cosine" (normalize_vector)
                float norm = 0.0f;
                for (size_t i = 0; i < dim; ++i) norm += query[i] * query[i];
                norm = 1.0f / (sqrtf(norm) + 1e-30f);
                for (size_t i = 0; i < dim; ++i) normalised[i] = query[i] * norm;
                query = normalised.data();
            }
            auto result = alg->searchKnn(query, kk, &filter);
            const size_t found = result.size();
            if (found < fewest) fewest = found;
            for (size_t i = found; i < kk; ++i) {  // unfilled slots, past the found ones
                out_labels[row * kk + i] = 0;
                out_dists[row * kk + i] = INFINITY;
            }
            for (size_t i = found; i-- > 0;) {  // the queue pops the farthest first
                out_labels[row * kk + i] = result.top().second;
                out_dists[row * kk + i] = result.top().first;
                result.pop();
            }
        }
    } catch (const std::exception& exc) {
        failed = true;
        error = exc.what();
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_SetString(PyExc_RuntimeError, error.c_str());
        return nullptr;
    }
    return PyLong_FromSize_t(fewest);
}

PyMethodDef methods[] = {
    {"probe", probe, METH_VARARGS,
     "probe(index) -> (space, dim, max_elements, count, ef, normalize, initialised)"},
    {"filtered_knn", filtered_knn, METH_VARARGS,
     "filtered_knn(index, queries, k, mask, labels_out, distances_out) -> fewest hits"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_filtered_knn",
                      "Filtered k-NN inside hnswlib's graph walk (see filtered_knn.cpp).", -1,
                      methods};

}  // namespace

PyMODINIT_FUNC PyInit__filtered_knn(void) { return PyModule_Create(&module); }
