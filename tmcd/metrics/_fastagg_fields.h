/*
 * Reading SyncEvent fields and small value helpers for tmcd.metrics._fastagg (included by
 * _fastagg.c only; a header so that each file stays small).  Fields are read at their slot
 * offsets, found once per event type from the type's member descriptors.
 */
#ifndef TMCD_FASTAGG_FIELDS_H
#define TMCD_FASTAGG_FIELDS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

/* The fields we read, by slot offset, for one event type (SyncEvent). */
enum { FLD_RESOURCE, FLD_OP, FLD_DIRECTION, FLD_LATENCY, FLD_OK, FLD_TIMESTAMP, N_FIELDS };
static const char *const field_names[N_FIELDS] = {
    "resource", "op", "direction", "latency_seconds", "ok", "timestamp",
};

typedef struct {
    PyTypeObject *type; /* strong */
    Py_ssize_t offset[N_FIELDS];
} Layout;

static Layout layout = {NULL, {0}};

static int
field_offset(PyTypeObject *tp, const char *name, Py_ssize_t *out)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)tp, name);
    if (descr == NULL) {
        return -1;
    }
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot field", tp->tp_name, name);
        Py_DECREF(descr);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
    if (m->type != T_OBJECT_EX && m->type != T_OBJECT) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", tp->tp_name, name);
        Py_DECREF(descr);
        return -1;
    }
    *out = m->offset; /* read before the DECREF: m belongs to the descriptor's type */
    Py_DECREF(descr);
    return 0;
}

static int
ensure_layout(PyTypeObject *tp)
{
    if (layout.type == tp) {
        return 0;
    }
    Layout l;
    for (int i = 0; i < N_FIELDS; i++) {
        if (field_offset(tp, field_names[i], &l.offset[i]) < 0) {
            return -1;
        }
    }
    l.type = (PyTypeObject *)Py_NewRef((PyObject *)tp);
    PyTypeObject *old = layout.type;
    layout = l; /* before the DECREF, which can run arbitrary code */
    Py_XDECREF(old);
    return 0;
}

static inline void
release_fields(PyObject **f, int n)
{
    for (int i = 0; i < n; i++) {
        Py_DECREF(f[i]);
    }
}

/* Strong references to an event's fields, released by the caller with release_fields. */
static inline int
take_fields(const Layout *lay, PyObject *ev, PyObject **f)
{
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *v = *(PyObject **)((char *)ev + lay->offset[i]);
        if (v == NULL) {
            PyErr_Format(PyExc_AttributeError, "event has no %s", field_names[i]);
            release_fields(f, i);
            return -1;
        }
        f[i] = Py_NewRef(v);
    }
    return 0;
}

static inline int
as_double(PyObject *v, double *out)
{
    if (PyFloat_CheckExact(v)) {
        *out = PyFloat_AS_DOUBLE(v);
        return 0;
    }
    *out = PyFloat_AsDouble(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* Index of the first bound >= v (bounds ascending, the last one +Inf); n if none (NaN).
 * A linear scan: latencies and lags sit in the first few buckets, so its branches are
 * predictable, which beats a binary search over a dozen bounds. */
static inline Py_ssize_t
bucket_of(const double *bounds, Py_ssize_t n, double v)
{
    Py_ssize_t i = 0;
    while (i < n && !(v <= bounds[i])) {
        i++;
    }
    return i;
}

/* Equality of two str objects (the hashes already matched). */
static inline Py_ALWAYS_INLINE int
str_equal(PyObject *a, PyObject *b)
{
    if (a == b) {
        return 1;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(a);
    if (len != PyUnicode_GET_LENGTH(b) || PyUnicode_KIND(a) != PyUnicode_KIND(b)) {
        return 0;
    }
    return memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)len * PyUnicode_KIND(a)) == 0;
}

/* A dict lookup that returns a strong reference: 1 found, 0 missing, -1 error. */
static inline int
dict_get_ref(PyObject *d, PyObject *key, PyObject **out)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyDict_GetItemRef(d, key, out);
#else
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v == NULL) {
        *out = NULL;
        return PyErr_Occurred() ? -1 : 0;
    }
    *out = Py_NewRef(v);
    return 1;
#endif
}

#endif /* TMCD_FASTAGG_FIELDS_H */
