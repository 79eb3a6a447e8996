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
// Small allowed sets are cheaper to scan than to walk (the walk visits about count/allowed
// nodes per result it keeps): `scan_knn` computes hnswlib's own distance (the index's distance
// function, over the vectors the index stores, so cosine rows are the normalised ones) to each
// allowed element, given by internal id (`internal_ids` maps labels to them once per filter).
//
// Thread safety is the caller's: like knn_query, a search must not overlap add_items,
// mark_deleted or resize_index on the same index. The GIL is released during the walk and
// the scan.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <queue>
#include <utility>
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
    std::deque<Py_buffer> views;  // views owned here (a deque keeps their addresses)
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

// The query rows and the result buffers every search function takes, checked once.
struct Rows {
    const float* data = nullptr;
    size_t rows = 0;
    size_t dim = 0;
    size_t k = 0;
    uint64_t* labels = nullptr;
    float* dists = nullptr;

    // queries: C-contiguous float32 (rows x dim); labels_out: uint64 (rows x k);
    // distances_out: float32 (rows x k), nearest first.
    bool parse(Buffers& buffers, const BindingIndex* index, PyObject* queries_obj, Py_ssize_t kk,
               PyObject* labels_obj, PyObject* dists_obj) {
        Py_buffer* queries = new_view(buffers);
        Py_buffer* out_labels = new_view(buffers);
        Py_buffer* out_dists = new_view(buffers);
        if (!buffers.get(queries_obj, queries, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) ||
            !buffers.get(labels_obj, out_labels, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) ||
            !buffers.get(dists_obj, out_dists, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE))
            return false;
        dim = static_cast<size_t>(index->dim);
        if (kk <= 0 || queries->itemsize != 4 || std::strcmp(queries->format, "f") != 0 ||
            queries->len % (4 * dim) != 0) {
            PyErr_SetString(PyExc_ValueError,
                            "queries must be float32 rows of the index dimension");
            return false;
        }
        rows = queries->len / (4 * dim);
        k = static_cast<size_t>(kk);
        if (static_cast<size_t>(out_labels->len) != rows * k * 8 ||
            static_cast<size_t>(out_dists->len) != rows * k * 4) {
            PyErr_SetString(PyExc_ValueError, "output buffers must hold rows x k results");
            return false;
        }
        data = static_cast<const float*>(queries->buf);
        labels = static_cast<uint64_t*>(out_labels->buf);
        dists = static_cast<float*>(out_dists->buf);
        return true;
    }

    static Py_buffer* new_view(Buffers& buffers) {
        buffers.views.emplace_back();
        return &buffers.views.back();
    }

    // Row `row` as the index compares it: normalised for "cosine", as the binding's
    // normalize_vector does, into `scratch`.
    const float* query(const BindingIndex* index, size_t row, std::vector<float>& scratch) const {
        const float* q = data + row * dim;
        if (!index->normalize) return q;
        scratch.resize(dim);
        float norm = 0.0f;
        for (size_t i = 0; i < dim; ++i) norm += q[i] * q[i];
        norm = 1.0f / (sqrtf(norm) + 1e-30f);
        for (size_t i = 0; i < dim; ++i) scratch[i] = q[i] * norm;
        return scratch.data();
    }

    // Write one row from a max-queue of (distance, label), nearest first; slots past the
    // found ones get label 0 and an infinite distance. Returns how many were found.
    size_t write(size_t row, std::priority_queue<std::pair<float, hnswlib::labeltype>>& result) {
        const size_t found = result.size();
        for (size_t i = found; i < k; ++i) {
            labels[row * k + i] = 0;
            dists[row * k + i] = INFINITY;
        }
        for (size_t i = found; i-- > 0;) {  // the queue pops the farthest first
            labels[row * k + i] = result.top().second;
            dists[row * k + i] = result.top().first;
            result.pop();
        }
        return found;
    }
};

hnswlib::HierarchicalNSW<float>* initialised(BindingIndex* index) {
    if (index->appr_alg == nullptr) {
        PyErr_SetString(PyExc_ValueError, "the index is not initialised");
        return nullptr;
    }
    return index->appr_alg;
}

// Run `body` with the GIL released; a C++ exception becomes a RuntimeError (returns false).
template <typename Body>
bool without_gil(Body&& body) {
    bool failed = false;
    std::string error;
    Py_BEGIN_ALLOW_THREADS
    try {
        body();
    } catch (const std::exception& exc) {
        failed = true;
        error = exc.what();
    }
    Py_END_ALLOW_THREADS
    if (failed) PyErr_SetString(PyExc_RuntimeError, error.c_str());
    return !failed;
}

// filtered_knn(index, queries, k, mask, labels_out, distances_out) -> fewest hits in a row
//   mask: bytes, nonzero = allowed, by label.
PyObject* filtered_knn(PyObject*, PyObject* args) {
    PyObject *obj, *queries_obj, *mask_obj, *labels_obj, *dists_obj;
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "OOnOOO", &obj, &queries_obj, &k, &mask_obj, &labels_obj,
                          &dists_obj))
        return nullptr;
    BindingIndex* index = binding_of(obj);
    if (index == nullptr) return nullptr;
    hnswlib::HierarchicalNSW<float>* alg = initialised(index);
    if (alg == nullptr) return nullptr;
    Buffers buffers;
    Rows rows;
    Py_buffer mask;
    if (!rows.parse(buffers, index, queries_obj, k, labels_obj, dists_obj) ||
        !buffers.get(mask_obj, &mask, PyBUF_C_CONTIGUOUS))
        return nullptr;
    MaskFilter filter(static_cast<const uint8_t*>(mask.buf), static_cast<size_t>(mask.len));
    size_t fewest = rows.k;
    const bool done = without_gil([&] {
        std::vector<float> scratch;
        for (size_t row = 0; row < rows.rows; ++row) {
            auto result = alg->searchKnn(rows.query(index, row, scratch), rows.k, &filter);
            const size_t found = rows.write(row, result);
            if (found < fewest) fewest = found;
        }
    });
    return done ? PyLong_FromSize_t(fewest) : nullptr;
}

// internal_ids(index, labels, out) -> how many labels the index does not hold (their out: -1)
//   labels: int64; out: int64 of the same length.
PyObject* internal_ids(PyObject*, PyObject* args) {
    PyObject *obj, *labels_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOO", &obj, &labels_obj, &out_obj)) return nullptr;
    BindingIndex* index = binding_of(obj);
    if (index == nullptr) return nullptr;
    hnswlib::HierarchicalNSW<float>* alg = initialised(index);
    if (alg == nullptr) return nullptr;
    Buffers buffers;
    Py_buffer labels, out;
    if (!buffers.get(labels_obj, &labels, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) ||
        !buffers.get(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE))
        return nullptr;
    if (labels.itemsize != 8 || labels.len != out.len) {
        PyErr_SetString(PyExc_ValueError, "labels and out must be int64 arrays of one length");
        return nullptr;
    }
    const size_t n = labels.len / 8;
    const auto* in = static_cast<const int64_t*>(labels.buf);
    auto* ids = static_cast<int64_t*>(out.buf);
    size_t missing = 0;
    const bool done = without_gil([&] {
        std::unique_lock<std::mutex> lock(alg->label_lookup_lock);
        for (size_t i = 0; i < n; ++i) {
            auto found = alg->label_lookup_.find(static_cast<hnswlib::labeltype>(in[i]));
            if (found == alg->label_lookup_.end()) {
                ids[i] = -1;
                ++missing;
            } else {
                ids[i] = static_cast<int64_t>(found->second);
            }
        }
    });
    if (!done) return nullptr;
    return PyLong_FromSize_t(missing);
}

// scan_knn(index, queries, k, internal, labels_out, distances_out) -> fewest hits in a row
//   internal: int64 internal ids to compare (from internal_ids); deleted ones are skipped.
PyObject* scan_knn(PyObject*, PyObject* args) {
    PyObject *obj, *queries_obj, *internal_obj, *labels_obj, *dists_obj;
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "OOnOOO", &obj, &queries_obj, &k, &internal_obj, &labels_obj,
                          &dists_obj))
        return nullptr;
    BindingIndex* index = binding_of(obj);
    if (index == nullptr) return nullptr;
    hnswlib::HierarchicalNSW<float>* alg = initialised(index);
    if (alg == nullptr) return nullptr;
    Buffers buffers;
    Rows rows;
    Py_buffer internal;
    if (!rows.parse(buffers, index, queries_obj, k, labels_obj, dists_obj) ||
        !buffers.get(internal_obj, &internal, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT))
        return nullptr;
    if (internal.itemsize != 8) {
        PyErr_SetString(PyExc_ValueError, "internal ids must be int64");
        return nullptr;
    }
    const size_t n = internal.len / 8;
    const auto* ids = static_cast<const int64_t*>(internal.buf);
    const size_t count = alg->cur_element_count.load();
    for (size_t i = 0; i < n; ++i) {
        if (ids[i] < 0 || static_cast<size_t>(ids[i]) >= count) {
            PyErr_SetString(PyExc_ValueError, "an internal id is outside the index");
            return nullptr;
        }
    }
    size_t fewest = rows.k;
    const bool done = without_gil([&] {
        std::vector<float> scratch;
        std::priority_queue<std::pair<float, hnswlib::labeltype>> best;
        for (size_t row = 0; row < rows.rows; ++row) {
            const float* query = rows.query(index, row, scratch);
            for (size_t i = 0; i < n; ++i) {
                const auto id = static_cast<hnswlib::tableint>(ids[i]);
                if (alg->isMarkedDeleted(id)) continue;
                const float dist =
                    alg->fstdistfunc_(query, alg->getDataByInternalId(id), alg->dist_func_param_);
                if (best.size() < rows.k) {
                    best.emplace(dist, alg->getExternalLabel(id));
                } else if (dist < best.top().first) {
                    best.pop();
                    best.emplace(dist, alg->getExternalLabel(id));
                }
            }
            const size_t found = rows.write(row, best);
            if (found < fewest) fewest = found;
        }
    });
    if (!done) return nullptr;
    return PyLong_FromSize_t(fewest);
}

// update_items(index, vectors, labels, near_probability) -> how many were moved far
//   vectors: float32 (rows x dim) for labels (int64) the index holds, live or deleted: the
//   element's vector is replaced (a deleted one is un-deleted) through hnswlib's updatePoint.
//   The binding's add_items always passes 1.0 as updateNeighborProbability, which
//   re-chooses the links of every neighbour from its two-hop neighbourhood: about 0.8 ms a
//   vector at M 16 against 0.14 ms for a fresh insert. Here that happens only for a vector
//   moved farther than its farthest level-0 neighbour (its old neighbours no longer describe
//   where it is). A nearer move uses `near_probability`: at 0 the element's own links are
//   chosen anew and its new neighbours link back (repairConnectionsForUpdate), at the cost
//   of an insert. An unchanged vector of a live element changes nothing in the graph.
PyObject* update_items(PyObject*, PyObject* args) {
    PyObject *obj, *vectors_obj, *labels_obj;
    float probability;
    if (!PyArg_ParseTuple(args, "OOOf", &obj, &vectors_obj, &labels_obj, &probability))
        return nullptr;
    BindingIndex* index = binding_of(obj);
    if (index == nullptr) return nullptr;
    hnswlib::HierarchicalNSW<float>* alg = initialised(index);
    if (alg == nullptr) return nullptr;
    Buffers buffers;
    Py_buffer vectors, labels;
    if (!buffers.get(vectors_obj, &vectors, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) ||
        !buffers.get(labels_obj, &labels, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT))
        return nullptr;
    const size_t dim = static_cast<size_t>(index->dim);
    if (vectors.itemsize != 4 || std::strcmp(vectors.format, "f") != 0 || labels.itemsize != 8 ||
        static_cast<size_t>(vectors.len) != (labels.len / 8) * 4 * dim) {
        PyErr_SetString(PyExc_ValueError, "vectors must be float32 rows, one per int64 label");
        return nullptr;
    }
    const size_t n = labels.len / 8;
    const auto* rows = static_cast<const float*>(vectors.buf);
    const auto* wanted = static_cast<const int64_t*>(labels.buf);
    std::vector<hnswlib::tableint> ids(n);
    {
        std::unique_lock<std::mutex> lock(alg->label_lookup_lock);
        for (size_t i = 0; i < n; ++i) {
            auto found = alg->label_lookup_.find(static_cast<hnswlib::labeltype>(wanted[i]));
            if (found == alg->label_lookup_.end()) {
                PyErr_SetString(PyExc_KeyError, "a label is not in the index");
                return nullptr;
            }
            ids[i] = found->second;
        }
    }
    size_t far_moves = 0;
    const bool done = without_gil([&] {
        std::vector<float> scratch(dim);
        for (size_t i = 0; i < n; ++i) {
            const float* row = rows + i * dim;
            if (index->normalize) {  // as the binding's add_items does for "cosine"
                float norm = 0.0f;
                for (size_t j = 0; j < dim; ++j) norm += row[j] * row[j];
                norm = 1.0f / (sqrtf(norm) + 1e-30f);
                for (size_t j = 0; j < dim; ++j) scratch[j] = row[j] * norm;
                row = scratch.data();
            }
            std::unique_lock<std::mutex> lock(alg->getLabelOpMutex(wanted[i]));
            const hnswlib::tableint id = ids[i];
            const char* held = alg->getDataByInternalId(id);
            const bool deleted = alg->isMarkedDeleted(id);
            if (!deleted && std::memcmp(held, row, alg->data_size_) == 0) continue;
            const float moved = alg->fstdistfunc_(row, held, alg->dist_func_param_);
            float radius = 0.0f;
            hnswlib::linklistsizeint* links = alg->get_linklist0(id);
            const auto* neighbours = reinterpret_cast<const hnswlib::tableint*>(links + 1);
            for (size_t j = 0, size = alg->getListCount(links); j < size; ++j) {
                const float d = alg->fstdistfunc_(
                    held, alg->getDataByInternalId(neighbours[j]), alg->dist_func_param_);
                if (d > radius) radius = d;
            }
            const bool far = moved > radius;
            if (far) ++far_moves;
            if (deleted) alg->unmarkDeletedInternal(id);
            alg->updatePoint(row, id, far ? 1.0f : probability);
        }
    });
    if (!done) return nullptr;
    return PyLong_FromSize_t(far_moves);
}

PyMethodDef methods[] = {
    {"probe", probe, METH_VARARGS,
     "probe(index) -> (space, dim, max_elements, count, ef, normalize, initialised)"},
    {"filtered_knn", filtered_knn, METH_VARARGS,
     "filtered_knn(index, queries, k, mask, labels_out, distances_out) -> fewest hits"},
    {"internal_ids", internal_ids, METH_VARARGS,
     "internal_ids(index, labels, out) -> how many labels are not in the index"},
    {"update_items", update_items, METH_VARARGS,
     "update_items(index, vectors, labels, near_probability) -> moved far"},
    {"scan_knn", scan_knn, METH_VARARGS,
     "scan_knn(index, queries, k, internal, labels_out, distances_out) -> fewest hits"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_filtered_knn",
                      "Filtered k-NN inside hnswlib's graph walk (see filtered_knn.cpp).", -1,
                      methods};

}  // namespace

PyMODINIT_FUNC PyInit__filtered_knn(void) { return PyModule_Create(&module); }
