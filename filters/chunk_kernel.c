/* The chunk table's two per-chunk loops, compiled (optional: filters/words.py falls back to the same
 * steps in Python when this module is not built).
 *
 * Why: tokenising real web text cold is dominated not by spaCy's rules but by the interpreter's per-chunk
 * overhead: about a million whitespace-separated chunks per 7 MB, each looked up in the chunk table, and
 * the ~170k distinct ones turned into token ids. These two functions do exactly what the Python code in
 * filters/words.py does, in the same order (so vocabulary ids and every score are identical), and hand
 * back to Python's ``split_chunk`` every chunk that is not plain letters, plain digits or a plain word
 * followed by one closing mark.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* chunk_indices(cache, chunks, base) -> (bytearray of int64 indices, list of new chunks)
 *
 * Each chunk's index in ``cache`` (a dict chunk -> index); a chunk not there yet is added to ``cache``
 * with index base, base + 1, ... in order of first appearance and listed in the new chunks, which the
 * caller must then append to the chunk table in that order. */
static PyObject *
chunk_indices(PyObject *self, PyObject *args)
{
    PyObject *cache, *chunks;
    Py_ssize_t base;
    if (!PyArg_ParseTuple(args, "O!O!n", &PyDict_Type, &cache, &PyList_Type, &chunks, &base))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(chunks);
    PyObject *out = PyByteArray_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    PyObject *fresh = PyList_New(0);
    if (out == NULL || fresh == NULL)
        goto fail;
    int64_t *idx = (int64_t *)PyByteArray_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(chunks, i);
        PyObject *v = PyDict_GetItemWithError(cache, key);
        if (v == NULL) {
            if (PyErr_Occurred())
                goto fail;
            Py_ssize_t k = base + PyList_GET_SIZE(fresh);
            PyObject *kobj = PyLong_FromSsize_t(k);
            if (kobj == NULL)
                goto fail;
            int bad = PyDict_SetItem(cache, key, kobj) < 0 || PyList_Append(fresh, key) < 0;
            Py_DECREF(kobj);
            if (bad)
                goto fail;
            idx[i] = k;
            continue;
        }
        idx[i] = PyLong_AsLongLong(v);
        if (idx[i] == -1 && PyErr_Occurred())
            goto fail;
    }
    return Py_BuildValue("(NN)", out, fresh);
fail:
    if (fresh != NULL) { /* leave the cache as it was */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(fresh); j++)
            if (PyDict_DelItem(cache, PyList_GET_ITEM(fresh, j)) < 0)
                PyErr_Clear();
        PyErr_Restore(type, value, tb);
    }
    Py_XDECREF(out);
    Py_XDECREF(fresh);
    return NULL;
}

/* A growable int64 buffer. */
typedef struct {
    int64_t *data;
    Py_ssize_t len, cap;
} Buf;

static int
buf_push(Buf *b, int64_t v)
{
    if (b->len == b->cap) {
        Py_ssize_t cap = b->cap ? 2 * b->cap : 1024;
        int64_t *d = PyMem_Realloc(b->data, (size_t)cap * sizeof(int64_t));
        if (d == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = d;
        b->cap = cap;
    }
    b->data[b->len++] = v;
    return 0;
}

/* The id of token ``tok`` in the vocabulary (``ids``: str -> id, ``strings``: id -> str), added if new. */
static int
token_id(PyObject *ids, PyObject *strings, PyObject *tok, Buf *flat)
{
    PyObject *v = PyDict_GetItemWithError(ids, tok);
    if (v != NULL) {
        Py_ssize_t i = PyLong_AsSsize_t(v);
        if (i == -1 && PyErr_Occurred())
            return -1;
        return buf_push(flat, i);
    }
    if (PyErr_Occurred())
        return -1;
    Py_ssize_t i = PyList_GET_SIZE(strings);
    PyObject *iobj = PyLong_FromSsize_t(i);
    if (iobj == NULL)
        return -1;
    int bad = PyDict_SetItem(ids, tok, iobj) < 0 || PyList_Append(strings, tok) < 0;
    Py_DECREF(iobj);
    return bad ? -1 : buf_push(flat, i);
}

/* str.isalpha / str.isdigit of s[lo:hi] (False when empty), by the same Unicode tables. */
static int
all_alpha(int kind, const void *data, Py_ssize_t lo, Py_ssize_t hi)
{
    if (lo >= hi)
        return 0;
    for (Py_ssize_t i = lo; i < hi; i++)
        if (!Py_UNICODE_ISALPHA(PyUnicode_READ(kind, data, i)))
            return 0;
    return 1;
}

static int
all_digit(int kind, const void *data, Py_ssize_t lo, Py_ssize_t hi)
{
    if (lo >= hi)
        return 0;
    for (Py_ssize_t i = lo; i < hi; i++)
        if (!Py_UNICODE_ISDIGIT(PyUnicode_READ(kind, data, i)))
            return 0;
    return 1;
}

static int
is_ascii_digit(Py_UCS4 c) { return c >= '0' && c <= '9'; }
static int
is_ascii_lower(Py_UCS4 c) { return c >= 'a' && c <= 'z'; }
static int
is_ascii_upper(Py_UCS4 c) { return c >= 'A' && c <= 'Z'; }

/* How the fast path splits ``chunk``: 1 = one token (the chunk), 2 = the word and its closing mark,
 * 0 = not decided here (Python's split_chunk decides). Mirrors the start of ``_split_fast`` in
 * filters/words.py, restricted to what needs no character table beyond ASCII: the caller has already
 * checked that the chunk is no special case. */
static int
fast_shape(PyObject *chunk, PyObject *specials, PyObject *exclude)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(chunk);
    int kind = PyUnicode_KIND(chunk);
    const void *data = PyUnicode_DATA(chunk);
    if (all_alpha(kind, data, 0, n) || all_digit(kind, data, 0, n))
        return 1;
    if (n < 2)
        return 0;
    Py_UCS4 mark = PyUnicode_READ(kind, data, n - 1);
    if (mark > 127 || strchr(",;:!?)]\"'.", (int)mark) == NULL)
        return 0;
    if (!(all_alpha(kind, data, 0, n - 1) || all_digit(kind, data, 0, n - 1)))
        return 0;
    if (mark == '.') {
        Py_UCS4 last = PyUnicode_READ(kind, data, n - 2);
        if (is_ascii_upper(last)) {
            if (n == 2 || is_ascii_lower(PyUnicode_READ(kind, data, n - 3)))
                return 1; /* "J." and "aB." keep their dot */
            if (!is_ascii_upper(PyUnicode_READ(kind, data, n - 3)))
                return 0;
        }
        else if (!is_ascii_digit(last) && !is_ascii_lower(last))
            return 0; /* whether a "." after other letters is a suffix needs spaCy's classes */
    }
    int r = PySet_Contains(exclude, chunk); /* word + mark spell a special case with punctuation */
    if (r != 0)
        return r < 0 ? -1 : 0;
    PyObject *word = PyUnicode_Substring(chunk, 0, n - 1);
    if (word == NULL)
        return -1;
    r = PyDict_Contains(specials, word);
    Py_DECREF(word);
    if (r != 0)
        return r < 0 ? -1 : 0;
    return 2;
}

/* tokenize_chunks(chunks, spacy, specials, exclude, ids, strings, split_chunk) -> (token ids, tokens per chunk)
 *
 * The token ids of every chunk, in order, and how many each has (two bytes objects of int64). With
 * ``spacy`` false every chunk is its own token (the whitespace tokenizer). Otherwise a special case or a
 * chunk of any shape but the simplest goes to ``split_chunk``; token ids are given in order of first
 * appearance, as the Python loop does. */
static PyObject *
tokenize_chunks(PyObject *self, PyObject *args)
{
    PyObject *chunks, *specials, *exclude, *ids, *strings, *split_chunk;
    int spacy;
    if (!PyArg_ParseTuple(args, "O!pO!O!O!O!O", &PyList_Type, &chunks, &spacy, &PyDict_Type, &specials,
                          &PyFrozenSet_Type, &exclude, &PyDict_Type, &ids, &PyList_Type, &strings, &split_chunk))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(chunks);
    Buf flat = {NULL, 0, 0};
    PyObject *lens = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (lens == NULL)
        return NULL;
    int64_t *len = (int64_t *)PyBytes_AS_STRING(lens);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *chunk = PyList_GET_ITEM(chunks, i);
        if (!PyUnicode_Check(chunk)) {
            PyErr_SetString(PyExc_TypeError, "chunks must be str");
            goto fail;
        }
        Py_ssize_t before = flat.len;
        int shape = 1;
        if (spacy) {
            int special = PyDict_Contains(specials, chunk);
            if (special < 0)
                goto fail;
            shape = special ? 0 : fast_shape(chunk, specials, exclude);
            if (shape < 0)
                goto fail;
        }
        if (shape == 1) {
            if (token_id(ids, strings, chunk, &flat) < 0)
                goto fail;
        }
        else if (shape == 2) {
            Py_ssize_t m = PyUnicode_GET_LENGTH(chunk);
            PyObject *word = PyUnicode_Substring(chunk, 0, m - 1);
            PyObject *mark = word ? PyUnicode_Substring(chunk, m - 1, m) : NULL;
            int bad = mark == NULL || token_id(ids, strings, word, &flat) < 0
                      || token_id(ids, strings, mark, &flat) < 0;
            Py_XDECREF(word);
            Py_XDECREF(mark);
            if (bad)
                goto fail;
        }
        else {
            PyObject *tokens = PyObject_CallOneArg(split_chunk, chunk);
            if (tokens == NULL)
                goto fail;
            PyObject *seq = PySequence_Fast(tokens, "split_chunk must return a sequence");
            Py_DECREF(tokens);
            if (seq == NULL)
                goto fail;
            Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
            for (Py_ssize_t j = 0; j < k; j++)
                if (token_id(ids, strings, PySequence_Fast_GET_ITEM(seq, j), &flat) < 0) {
                    Py_DECREF(seq);
                    goto fail;
                }
            Py_DECREF(seq);
        }
        len[i] = flat.len - before;
    }
    PyObject *flat_bytes = PyBytes_FromStringAndSize((const char *)flat.data, flat.len * (Py_ssize_t)sizeof(int64_t));
    PyMem_Free(flat.data);
    if (flat_bytes == NULL) {
        Py_DECREF(lens);
        return NULL;
    }
    return Py_BuildValue("(NN)", flat_bytes, lens);
fail:
    PyMem_Free(flat.data);
    Py_DECREF(lens);
    return NULL;
}

static PyMethodDef methods[] = {
    {"chunk_indices", chunk_indices, METH_VARARGS,
     "chunk_indices(cache, chunks, base) -> (bytearray of int64 indices, list of new chunks)"},
    {"tokenize_chunks", tokenize_chunks, METH_VARARGS,
     "tokenize_chunks(chunks, spacy, specials, exclude, ids, strings, split_chunk) -> (ids bytes, lengths bytes)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "chunk_kernel",
                                    "The chunk table's per-chunk loops, compiled (see filters/words.py).", -1,
                                    methods};

PyMODINIT_FUNC
PyInit_chunk_kernel(void)
{
    return PyModule_Create(&module);
}
