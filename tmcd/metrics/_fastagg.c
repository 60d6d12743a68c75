/*
 * tmcd.metrics._fastagg: one pass over a batch of decoded SyncEvents, in C.
 *
 * The metrics agent's hot path (tmcd/metrics/model.py) needs, per batch of one cluster's
 * sync events: counts per (resource, op, direction), the sync-latency histogram per
 * direction, the event-lag histogram, and the failed events.  The pure-Python path does
 * this with a dozen C-level passes (attrgetter, Counter, sort, bisect); this module does
 * it in one loop that reads the Struct fields at their slot offsets.  Both paths give the
 * same counts and buckets (tests/test_metrics_fastagg.py checks it); sums may differ in
 * the last bits (plain addition here, math.fsum there).
 *
 * The module is optional: the wheel build hook (hatch_build.py) compiles it when a C
 * compiler is available, and tmcd falls back to the pure-Python path otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* Slot offsets of the fields we read, for one event type (SyncEvent). */
typedef struct {
    PyTypeObject *type;
    Py_ssize_t resource, op, direction, latency, ok, timestamp;
} Layout;

static Layout layout = {NULL, 0, 0, 0, 0, 0, 0};
static PyObject *str_up = NULL;
static PyObject *str_value = NULL;

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
    *out = m->offset;
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
    l.type = tp;
    if (field_offset(tp, "resource", &l.resource) < 0 || field_offset(tp, "op", &l.op) < 0 ||
        field_offset(tp, "direction", &l.direction) < 0 ||
        field_offset(tp, "latency_seconds", &l.latency) < 0 || field_offset(tp, "ok", &l.ok) < 0 ||
        field_offset(tp, "timestamp", &l.timestamp) < 0) {
        return -1;
    }
    Py_INCREF(tp);
    Py_XDECREF(layout.type);
    layout = l;
    return 0;
}

static inline PyObject *
slot(PyObject *obj, Py_ssize_t offset, const char *name)
{
    PyObject *v = *(PyObject **)((char *)obj + offset);
    if (v == NULL) {
        PyErr_Format(PyExc_AttributeError, "event has no %s", name);
    }
    return v;
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
static inline int
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

typedef struct {
    Py_hash_t hash;
    PyObject *resource, *op, *direction; /* borrowed from the events */
    Py_ssize_t count;
    Py_ssize_t order;
} Entry;

#define MAX_BOUNDS 64

static int
read_bounds(PyObject *seq, double *out, Py_ssize_t *n, const char *what)
{
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL) {
        return -1;
    }
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    if (len < 1 || len > MAX_BOUNDS) {
        PyErr_Format(PyExc_ValueError, "%s: expected 1 to %d bounds", what, MAX_BOUNDS);
        Py_DECREF(fast);
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < len; i++) {
        if (as_double(items[i], &out[i]) < 0) {
            Py_DECREF(fast);
            return -1;
        }
    }
    *n = len;
    Py_DECREF(fast);
    return 0;
}

static PyObject *
counts_list(const Py_ssize_t *counts, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyLong_FromSsize_t(counts[i]);
        if (c == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, c);
    }
    return list;
}

PyDoc_STRVAR(aggregate_doc,
"aggregate(events, now, sync_bounds, lag_bounds, known=None) -> tuple\n"
"\n"
"One pass over a batch of SyncEvents (all of one type).  ``*_bounds`` are a histogram's\n"
"upper bounds, ascending, ending with +Inf.  ``known`` maps (resource, op, direction)\n"
"to objects whose ``_value`` the count is added to (prometheus-client values).  Returns\n"
"``(counts, down, up, down_sum, up_sum, lag, lag_sum, failed)``: counts per (resource,\n"
"op, direction) not in ``known``, in first-seen order; per-bucket (not cumulative) sync-latency counts for direction down and up and\n"
"their sums; per-bucket counts of ``now - timestamp`` and their sum (negative lags\n"
"count in the first bucket and add 0 to the sum); and the events whose ``ok`` is false.");

static PyObject *
aggregate(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *events_obj, *sync_obj, *lag_obj, *known = Py_None;
    double now;
    if (!PyArg_ParseTuple(args, "OdOO|O:aggregate", &events_obj, &now, &sync_obj, &lag_obj, &known)) {
        return NULL;
    }
    if (known != Py_None && !PyDict_Check(known)) {
        PyErr_SetString(PyExc_TypeError, "known must be a dict or None");
        return NULL;
    }
    double sync_bounds[MAX_BOUNDS], lag_bounds[MAX_BOUNDS];
    Py_ssize_t n_sync, n_lag;
    if (read_bounds(sync_obj, sync_bounds, &n_sync, "sync_bounds") < 0 ||
        read_bounds(lag_obj, lag_bounds, &n_lag, "lag_bounds") < 0) {
        return NULL;
    }
    PyObject *events = PySequence_Fast(events_obj, "events must be a sequence");
    if (events == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(events);
    PyObject **items = PySequence_Fast_ITEMS(events);

    Py_ssize_t down[MAX_BOUNDS] = {0}, up[MAX_BOUNDS] = {0}, lag[MAX_BOUNDS] = {0};
    double down_sum = 0.0, up_sum = 0.0, lag_sum = 0.0;
    PyObject *failed = PyList_New(0);
    PyObject *result = NULL;
    Py_ssize_t cap = 16;
    while (cap < 2 * n) {
        cap <<= 1;
    }
    Entry *table = PyMem_Calloc((size_t)cap, sizeof(Entry));
    Py_ssize_t distinct = 0;
    if (failed == NULL || table == NULL) {
        if (table == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    if (n > 0 && ensure_layout(Py_TYPE(items[0])) < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ev = items[i];
        if (Py_TYPE(ev) != layout.type) {
            PyErr_Format(PyExc_TypeError, "events must all be %s, not %s", layout.type->tp_name,
                         Py_TYPE(ev)->tp_name);
            goto done;
        }
        PyObject *resource = slot(ev, layout.resource, "resource");
        PyObject *op = slot(ev, layout.op, "op");
        PyObject *direction = slot(ev, layout.direction, "direction");
        PyObject *latency = slot(ev, layout.latency, "latency_seconds");
        PyObject *ok = slot(ev, layout.ok, "ok");
        PyObject *timestamp = slot(ev, layout.timestamp, "timestamp");
        if (!resource || !op || !direction || !latency || !ok || !timestamp) {
            goto done;
        }
        if (!PyUnicode_Check(resource) || !PyUnicode_Check(op) || !PyUnicode_Check(direction)) {
            PyErr_SetString(PyExc_TypeError, "resource, op and direction must be str");
            goto done;
        }
        /* count per (resource, op, direction) */
        Py_hash_t hr = PyObject_Hash(resource), ho = PyObject_Hash(op), hd = PyObject_Hash(direction);
        if (hr == -1 || ho == -1 || hd == -1) {
            goto done;
        }
        Py_uhash_t h = (Py_uhash_t)hr * 1000003u ^ (Py_uhash_t)ho * 69069u ^ (Py_uhash_t)hd;
        Py_ssize_t at = (Py_ssize_t)(h & (Py_uhash_t)(cap - 1));
        for (;;) {
            Entry *e = &table[at];
            if (e->resource == NULL) {
                e->hash = (Py_hash_t)h;
                e->resource = resource;
                e->op = op;
                e->direction = direction;
                e->count = 1;
                e->order = distinct++;
                break;
            }
            if (e->hash == (Py_hash_t)h && str_equal(e->resource, resource) && str_equal(e->op, op) &&
                str_equal(e->direction, direction)) {
                e->count++;
                break;
            }
            at = (at + 1) & (cap - 1);
        }
        if (PyErr_Occurred()) {
            goto done;
        }
        /* sync latency per direction */
        double v;
        if (as_double(latency, &v) < 0) {
            goto done;
        }
        Py_ssize_t b = bucket_of(sync_bounds, n_sync, v);
        if (str_equal(direction, str_up)) {
            if (b < n_sync) {
                up[b]++;
            }
            up_sum += v;
        }
        else {
            if (b < n_sync) {
                down[b]++;
            }
            down_sum += v;
        }
        /* event lag */
        double ts;
        if (as_double(timestamp, &ts) < 0) {
            goto done;
        }
        double l = now - ts;
        b = bucket_of(lag_bounds, n_lag, l);
        if (b < n_lag) {
            lag[b]++;
        }
        if (l > 0.0) {
            lag_sum += l;
        }
        /* failures */
        int is_ok = (ok == Py_True) ? 1 : (ok == Py_False) ? 0 : PyObject_IsTrue(ok);
        if (is_ok < 0) {
            goto done;
        }
        if (!is_ok && PyList_Append(failed, ev) < 0) {
            goto done;
        }
    }
    {
        /* counts in first-seen order */
        PyObject **keys = PyMem_Calloc((size_t)(distinct ? distinct : 1), sizeof(PyObject *));
        Py_ssize_t *values = PyMem_Calloc((size_t)(distinct ? distinct : 1), sizeof(Py_ssize_t));
        PyObject *counts = PyDict_New();
        PyObject *down_l = NULL, *up_l = NULL, *lag_l = NULL;
        if (keys == NULL || values == NULL || counts == NULL) {
            if (keys == NULL || values == NULL) {
                PyErr_NoMemory();
            }
            goto counts_done;
        }
        for (Py_ssize_t i = 0; i < cap; i++) {
            Entry *e = &table[i];
            if (e->resource != NULL) {
                keys[e->order] = PyTuple_Pack(3, e->resource, e->op, e->direction);
                values[e->order] = e->count;
                if (keys[e->order] == NULL) {
                    goto counts_done;
                }
            }
        }
        for (Py_ssize_t i = 0; i < distinct; i++) {
            PyObject *c = PyLong_FromSsize_t(values[i]);
            if (c == NULL) {
                goto counts_done;
            }
            PyObject *value = known != Py_None ? PyDict_GetItemWithError(known, keys[i]) : NULL;
            if (value != NULL) {
                /* a known key: value._value += count (the caller's metric value object) */
                PyObject *old = PyObject_GetAttr(value, str_value);
                PyObject *sum = old ? PyNumber_Add(old, c) : NULL;
                int failed_set = sum ? PyObject_SetAttr(value, str_value, sum) : -1;
                Py_XDECREF(old);
                Py_XDECREF(sum);
                Py_DECREF(c);
                if (failed_set < 0) {
                    goto counts_done;
                }
                continue;
            }
            if (PyErr_Occurred() || PyDict_SetItem(counts, keys[i], c) < 0) {
                Py_DECREF(c);
                goto counts_done;
            }
            Py_DECREF(c);
        }
        down_l = counts_list(down, n_sync);
        up_l = down_l ? counts_list(up, n_sync) : NULL;
        lag_l = up_l ? counts_list(lag, n_lag) : NULL;
        if (lag_l != NULL) {
            result = Py_BuildValue("(OOOddOdO)", counts, down_l, up_l, down_sum, up_sum, lag_l, lag_sum,
                                   failed);
        }
    counts_done:
        if (keys != NULL) {
            for (Py_ssize_t i = 0; i < distinct; i++) {
                Py_XDECREF(keys[i]);
            }
        }
        PyMem_Free(keys);
        PyMem_Free(values);
        Py_XDECREF(counts);
        Py_XDECREF(down_l);
        Py_XDECREF(up_l);
        Py_XDECREF(lag_l);
    }
done:
    PyMem_Free(table);
    Py_XDECREF(failed);
    Py_DECREF(events);
    return result;
}

static PyMethodDef methods[] = {
    {"aggregate", aggregate, METH_VARARGS, aggregate_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fastagg",
    .m_doc = "Per-batch aggregation of sync events in C (optional; see tmcd.metrics.model).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__fastagg(void)
{
    if (str_up == NULL) {
        str_up = PyUnicode_InternFromString("up");
        str_value = PyUnicode_InternFromString("_value");
        if (str_up == NULL || str_value == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
