/*
 * tmcd.metrics._fastagg: one pass over a batch of decoded SyncEvents, in C.
 *
 * The metrics agent's hot path (tmcd/metrics/model.py) needs, per batch of one cluster's
 * sync events: counts per (resource, op, direction), the sync-latency histogram per
 * direction, the event-lag histogram, and the failed events.  The pure-Python path does
 * this with a dozen C-level passes (attrgetter, Counter, sort, bisect); this module does
 * it in one loop that reads the Struct fields at their slot offsets.  Both paths give the
 * same counts and buckets (tests/test_metrics_fastagg.py checks it, and tmcd checks it
 * once at start); sums may differ in the last bits (plain addition here, math.fsum there).
 *
 * Two rules keep a failure harmless, so that the caller can redo the batch in Python:
 * - all or nothing: the only writes outside this call (the ``known`` values) come after
 *   everything that can fail has been computed, and are undone if one of them fails;
 * - no borrowed reference is held across a call that can run Python code (a __float__,
 *   __bool__ or __hash__, a property, a dict lookup): an event whose fields are not of the
 *   exact types msgspec decodes (whose handling runs no Python code) is held, with its
 *   fields, by strong references, and so are the count table's keys and ``known`` values.
 *
 * The module is optional: the wheel build hook (hatch_build.py) compiles it when a C
 * compiler is available, and tmcd falls back to the pure-Python path otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_fastagg_fields.h"

static PyObject *str_up = NULL;
static PyObject *str_value = NULL;

#define MAX_BOUNDS 64

typedef struct {
    Py_hash_t hash;
    PyObject *resource, *op, *direction; /* strong */
    Py_ssize_t count;
} Entry;

/* Everything one call accumulates before it builds its result. */
typedef struct {
    double now;
    double sync_bounds[MAX_BOUNDS], lag_bounds[MAX_BOUNDS];
    Py_ssize_t n_sync, n_lag;
    Py_ssize_t down[MAX_BOUNDS], up[MAX_BOUNDS], lag[MAX_BOUNDS];
    double down_sum, up_sum, lag_sum;
    Entry *table;
    Py_ssize_t cap, distinct;
    Py_ssize_t *seen; /* the table's used slots in first-seen order (distinct of them) */
    PyObject *failed; /* list */
} Batch;

static int
read_bounds(PyObject *seq, double *out, Py_ssize_t *n, const char *what)
{
    /* a tuple: its items stay alive even if a __float__ below mutates the caller's list */
    PyObject *tuple = PySequence_Tuple(seq);
    if (tuple == NULL) {
        return -1;
    }
    Py_ssize_t len = PyTuple_GET_SIZE(tuple);
    if (len < 1 || len > MAX_BOUNDS) {
        PyErr_Format(PyExc_ValueError, "%s: expected 1 to %d bounds", what, MAX_BOUNDS);
        Py_DECREF(tuple);
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        if (as_double(PyTuple_GET_ITEM(tuple, i), &out[i]) < 0) {
            Py_DECREF(tuple);
            return -1;
        }
    }
    *n = len;
    Py_DECREF(tuple);
    return 0;
}

/* Count one event's fields ``f``.  ``exact``: they are of the exact types msgspec decodes
 * (str, float, bool), so no check is needed and no Python code runs; a constant at each
 * call site, so that each inlined copy keeps only its own branches. */
static inline Py_ALWAYS_INLINE int
count_event(Batch *b, PyObject *ev, PyObject *const *f, const int exact)
{
    PyObject *resource = f[FLD_RESOURCE], *op = f[FLD_OP], *direction = f[FLD_DIRECTION];
    if (!exact && (!PyUnicode_Check(resource) || !PyUnicode_Check(op) || !PyUnicode_Check(direction))) {
        PyErr_SetString(PyExc_TypeError, "resource, op and direction must be str");
        return -1;
    }
    /* count per (resource, op, direction) */
    Py_hash_t hr = PyObject_Hash(resource), ho = PyObject_Hash(op), hd = PyObject_Hash(direction);
    if (hr == -1 || ho == -1 || hd == -1) {
        return -1;
    }
    Py_uhash_t h = (Py_uhash_t)hr * 1000003u ^ (Py_uhash_t)ho * 69069u ^ (Py_uhash_t)hd;
    Py_ssize_t at = (Py_ssize_t)(h & (Py_uhash_t)(b->cap - 1));
    for (;;) {
        Entry *e = &b->table[at];
        if (e->resource == NULL) {
            e->hash = (Py_hash_t)h;
            e->resource = Py_NewRef(resource);
            e->op = Py_NewRef(op);
            e->direction = Py_NewRef(direction);
            e->count = 1;
            b->seen[b->distinct++] = at;
            break;
        }
        if (e->hash == (Py_hash_t)h && str_equal(e->resource, resource) && str_equal(e->op, op) &&
            str_equal(e->direction, direction)) {
            e->count++;
            break;
        }
        at = (at + 1) & (b->cap - 1);
    }
    /* sync latency per direction */
    double v;
    if (exact) {
        v = PyFloat_AS_DOUBLE(f[FLD_LATENCY]);
    }
    else if (as_double(f[FLD_LATENCY], &v) < 0) {
        return -1;
    }
    Py_ssize_t k = bucket_of(b->sync_bounds, b->n_sync, v);
    if (str_equal(direction, str_up)) {
        if (k < b->n_sync) {
            b->up[k]++;
        }
        b->up_sum += v;
    }
    else {
        if (k < b->n_sync) {
            b->down[k]++;
        }
        b->down_sum += v;
    }
    /* event lag */
    double ts;
    if (exact) {
        ts = PyFloat_AS_DOUBLE(f[FLD_TIMESTAMP]);
    }
    else if (as_double(f[FLD_TIMESTAMP], &ts) < 0) {
        return -1;
    }
    double l = b->now - ts;
    k = bucket_of(b->lag_bounds, b->n_lag, l);
    if (k < b->n_lag) {
        b->lag[k]++;
    }
    if (l > 0.0) {
        b->lag_sum += l;
    }
    /* failures */
    PyObject *ok = f[FLD_OK];
    int is_ok = (ok == Py_True) ? 1 : (exact || ok == Py_False) ? 0 : PyObject_IsTrue(ok);
    if (is_ok < 0) {
        return -1;
    }
    return (!is_ok && PyList_Append(b->failed, ev) < 0) ? -1 : 0;
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

/* A count to add to a caller's value object (from ``known``). */
typedef struct {
    PyObject *value; /* strong */
    Py_ssize_t count;
    PyObject *old; /* strong once applied: value._value before, to undo with */
} Pending;

/* value._value += count for each; all or nothing: on an error the ones already applied
 * are set back (in reverse, so a value object shared by two keys ends where it began). */
static int
apply_pending(Pending *p, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        PyObject *old = PyObject_GetAttr(p[i].value, str_value);
        if (old == NULL) {
            break;
        }
        PyObject *c = PyLong_FromSsize_t(p[i].count);
        PyObject *sum = c ? PyNumber_Add(old, c) : NULL;
        int rc = sum ? PyObject_SetAttr(p[i].value, str_value, sum) : -1;
        Py_XDECREF(c);
        Py_XDECREF(sum);
        if (rc < 0) {
            Py_DECREF(old);
            break;
        }
        p[i].old = old;
    }
    if (i == n) {
        return 0;
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
#endif
    while (i-- > 0) {
        /* setting back a value just set cannot fail for the caller's value objects; if a
         * strange one does, the first error is still the one raised */
        if (PyObject_SetAttr(p[i].value, str_value, p[i].old) < 0) {
            PyErr_Clear();
        }
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(type, exc, tb);
#endif
    return -1;
}

/* The result tuple; known keys' counts are added to their values last (see apply_pending). */
static PyObject *
build_result(Batch *b, PyObject *known)
{
    Pending *pending = PyMem_Malloc(sizeof(Pending) * (size_t)(b->distinct ? b->distinct : 1));
    Py_ssize_t n_pending = 0;
    PyObject *counts = PyDict_New();
    PyObject *down_l = NULL, *up_l = NULL, *lag_l = NULL, *result = NULL;
    if (pending == NULL || counts == NULL) {
        if (counts != NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    for (Py_ssize_t i = 0; i < b->distinct; i++) {
        Entry *e = &b->table[b->seen[i]];
        PyObject *key = PyTuple_Pack(3, e->resource, e->op, e->direction);
        if (key == NULL) {
            goto done;
        }
        PyObject *value = NULL;
        int found = known != Py_None ? dict_get_ref(known, key, &value) : 0;
        if (found > 0) {
            pending[n_pending].value = value;
            pending[n_pending].count = e->count;
            pending[n_pending].old = NULL;
            n_pending++;
            Py_DECREF(key);
            continue;
        }
        PyObject *c = found == 0 ? PyLong_FromSsize_t(e->count) : NULL;
        int rc = c != NULL ? PyDict_SetItem(counts, key, c) : -1;
        Py_XDECREF(c);
        Py_DECREF(key);
        if (rc < 0) {
            goto done;
        }
    }
    down_l = counts_list(b->down, b->n_sync);
    up_l = down_l ? counts_list(b->up, b->n_sync) : NULL;
    lag_l = up_l ? counts_list(b->lag, b->n_lag) : NULL;
    if (lag_l == NULL) {
        goto done;
    }
    result = Py_BuildValue("(OOOddOdO)", counts, down_l, up_l, b->down_sum, b->up_sum, lag_l, b->lag_sum,
                           b->failed);
    if (result != NULL && apply_pending(pending, n_pending) < 0) {
        Py_CLEAR(result);
    }
done:
    for (Py_ssize_t i = 0; i < n_pending; i++) {
        Py_DECREF(pending[i].value);
        Py_XDECREF(pending[i].old);
    }
    PyMem_Free(pending);
    Py_XDECREF(counts);
    Py_XDECREF(down_l);
    Py_XDECREF(up_l);
    Py_XDECREF(lag_l);
    return result;
}

PyDoc_STRVAR(aggregate_doc,
"aggregate(events, now, sync_bounds, lag_bounds, known=None) -> tuple\n"
"\n"
"One pass over a batch of SyncEvents (all of one type).  ``*_bounds`` are a histogram's\n"
"upper bounds, ascending, ending with +Inf.  ``known`` maps (resource, op, direction)\n"
"to objects whose ``_value`` the count is added to (prometheus-client values).  Returns\n"
"``(counts, down, up, down_sum, up_sum, lag, lag_sum, failed)``: counts per (resource,\n"
"op, direction) not in ``known``, in first-seen order; per-bucket (not cumulative)\n"
"sync-latency counts for direction down and up and their sums; per-bucket counts of\n"
"``now - timestamp`` and their sum (negative lags count in the first bucket and add 0 to\n"
"the sum); and the events whose ``ok`` is false.  All or nothing: when it raises, no\n"
"``known`` value was changed.");

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
    Batch b;
    b.now = now;
    b.down_sum = b.up_sum = b.lag_sum = 0.0;
    b.distinct = 0;
    if (read_bounds(sync_obj, b.sync_bounds, &b.n_sync, "sync_bounds") < 0 ||
        read_bounds(lag_obj, b.lag_bounds, &b.n_lag, "lag_bounds") < 0) {
        return NULL;
    }
    memset(b.down, 0, sizeof(b.down[0]) * (size_t)b.n_sync);
    memset(b.up, 0, sizeof(b.up[0]) * (size_t)b.n_sync);
    memset(b.lag, 0, sizeof(b.lag[0]) * (size_t)b.n_lag);
    PyObject *events = PySequence_Fast(events_obj, "events must be a sequence");
    if (events == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(events);
    PyObject *result = NULL;
    Layout lay = {NULL, {0}};
    b.cap = 16;
    while (b.cap < 2 * n) {
        b.cap <<= 1;
    }
    b.failed = PyList_New(0);
    b.table = PyMem_Calloc((size_t)b.cap, sizeof(Entry));
    b.seen = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    if (b.failed == NULL || b.table == NULL || b.seen == NULL) {
        if (b.failed != NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    if (n > 0) {
        if (ensure_layout(Py_TYPE(PySequence_Fast_GET_ITEM(events, 0))) < 0) {
            goto done;
        }
        /* our own copy: a call made from Python code that runs below may change the cache */
        lay = layout;
        Py_INCREF(lay.type);
    }
    PyObject **items = PySequence_Fast_ITEMS(events);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ev = items[i];
        if (Py_TYPE(ev) != lay.type) {
            PyErr_Format(PyExc_TypeError, "events must all be %s, not %s", lay.type->tp_name, Py_TYPE(ev)->tp_name);
            goto done;
        }
        PyObject *f[N_FIELDS];
        int present = 1;
        for (int k = 0; k < N_FIELDS; k++) {
            f[k] = *(PyObject **)((char *)ev + lay.offset[k]);
            present &= f[k] != NULL;
        }
        /* Fields of the exact types msgspec decodes: counting them runs no Python code, so
         * nothing can free what is borrowed from the events (the common case, kept cheap). */
        if (present && PyUnicode_CheckExact(f[FLD_RESOURCE]) && PyUnicode_CheckExact(f[FLD_OP]) &&
            PyUnicode_CheckExact(f[FLD_DIRECTION]) && PyFloat_CheckExact(f[FLD_LATENCY]) &&
            PyFloat_CheckExact(f[FLD_TIMESTAMP]) && PyBool_Check(f[FLD_OK])) {
            if (count_event(&b, ev, f, 1) < 0) {
                goto done;
            }
            continue;
        }
        /* Anything else may run Python code (__float__, __bool__, __hash__) that drops the
         * event's or its fields' last other reference, or changes the list: hold them. */
        Py_INCREF(ev);
        if (take_fields(&lay, ev, f) < 0) {
            Py_DECREF(ev);
            goto done;
        }
        int rc = count_event(&b, ev, f, 0);
        release_fields(f, N_FIELDS);
        Py_DECREF(ev);
        if (rc < 0) {
            goto done;
        }
        if (PySequence_Fast_GET_SIZE(events) != n) {
            PyErr_SetString(PyExc_RuntimeError, "events changed size during aggregate()");
            goto done;
        }
        items = PySequence_Fast_ITEMS(events); /* a list may have moved its items */
    }
    result = build_result(&b, known);
done:
    for (Py_ssize_t i = 0; i < b.distinct; i++) {
        Entry *e = &b.table[b.seen[i]];
        Py_DECREF(e->resource);
        Py_DECREF(e->op);
        Py_DECREF(e->direction);
    }
    PyMem_Free(b.seen);
    PyMem_Free(b.table);
    Py_XDECREF(b.failed);
    Py_XDECREF(lay.type);
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
