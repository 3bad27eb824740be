/* The chunk table's per-chunk loops and spaCy's affix and infix rules, compiled (optional: filters/words.py
 * falls back to the same steps in Python when this module is not built).
 *
 * Why: tokenising real web text cold is dominated by the interpreter's per-chunk overhead: about a million
 * whitespace-separated chunks per 7 MB, each looked up in the chunk table, and the ~170k distinct ones turned
 * into token ids, a quarter of them through spaCy's affix loop. These functions do what the Python code in
 * filters/words.py does, in the same order (so vocabulary ids and every score are identical), with the
 * character classes, special cases and URL pattern taken from there (configure); a chunk whose tokens spaCy's
 * second pass could join goes back to Python's split_chunk.
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

/* ------------------------------------------------------------------------------------------------------
 * spaCy's general affix loop and infixes (``_split`` in filters/words.py), over one chunk's code points.
 * The tables come from filters/words.py once (configure): the per-character flags, the unit and currency
 * suffixes after a digit by length, the two-character suffixes, the URL pattern and the token pairs that can
 * start a special case. A chunk whose tokens would need spaCy's second pass goes back to Python. */

enum { P1 = 1, S1 = 2, DOT_OK = 4, UP = 8, ICON = 16, ALPHA = 32, LOWER_Q = 64, UPPER_Q = 128 };

static PyObject *g_flags = NULL;       /* dict subclass: 1-char str -> int flags, computed on first lookup */
static PyObject *g_after_digit = NULL; /* tuple: index k -> frozenset of k-character suffixes after a digit */
static PyObject *g_two_char = NULL;    /* frozenset of two-character suffixes */
static PyObject *g_url = NULL;         /* callable: the URL pattern's fullmatch */
static PyObject *g_pairs = NULL;       /* frozenset of (token, token) pairs that can start a special case */
static Py_ssize_t g_suffix_max = 0;
static Py_ssize_t g_special_max = 0;   /* the longest special case: a longer slice is none, unhashed */
#define FLAG_CACHE 0x3000
static int16_t g_flag_cache[FLAG_CACHE];

static PyObject *
configure(PyObject *self, PyObject *args)
{
    PyObject *flags, *after_digit, *two_char, *url, *pairs;
    Py_ssize_t special_max;
    if (!PyArg_ParseTuple(args, "OO!O!OO!n", &flags, &PyTuple_Type, &after_digit, &PyFrozenSet_Type, &two_char, &url,
                          &PyFrozenSet_Type, &pairs, &special_max))
        return NULL;
    Py_INCREF(flags);
    Py_INCREF(after_digit);
    Py_INCREF(two_char);
    Py_INCREF(url);
    Py_INCREF(pairs);
    Py_XSETREF(g_flags, flags);
    Py_XSETREF(g_after_digit, after_digit);
    Py_XSETREF(g_two_char, two_char);
    Py_XSETREF(g_url, url);
    Py_XSETREF(g_pairs, pairs);
    g_suffix_max = PyTuple_GET_SIZE(after_digit) - 1;
    g_special_max = special_max;
    memset(g_flag_cache, 0xff, sizeof(g_flag_cache));
    Py_RETURN_NONE;
}

static int
char_flags(Py_UCS4 c)
{
    if (c < FLAG_CACHE && g_flag_cache[c] >= 0)
        return g_flag_cache[c];
    PyObject *key = PyUnicode_FromOrdinal((int)c);
    if (key == NULL)
        return -1;
    PyObject *v = PyObject_GetItem(g_flags, key);
    Py_DECREF(key);
    if (v == NULL)
        return -1;
    long f = PyLong_AsLong(v);
    Py_DECREF(v);
    if (f < 0 || f > 0x7fff) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "character flags out of range");
        return -1;
    }
    if (c < FLAG_CACHE)
        g_flag_cache[c] = (int16_t)f;
    return (int)f;
}

/* One chunk being split: its code points and their flags. */
typedef struct {
    PyObject *chunk;
    Py_ssize_t n;
    int kind;
    const void *data;
    int *flags;
} Chunk;

#define CH(ck, i) PyUnicode_READ((ck)->kind, (ck)->data, (i))
static int is_digit09(Py_UCS4 c) { return c >= '0' && c <= '9'; }

/* Whether chunk[lo:hi] is in ``set`` (a dict or frozenset); -1 on error. The special cases are short, so a
 * long slice is none without being copied: the affix loop stays linear in the chunk's length (a hostile
 * 10^6-character run of brackets would be quadratic otherwise). */
static int
slice_in(const Chunk *ck, Py_ssize_t lo, Py_ssize_t hi, PyObject *set)
{
    if (PyDict_Check(set) && hi - lo > g_special_max)
        return 0;
    PyObject *sub = PyUnicode_Substring(ck->chunk, lo, hi);
    if (sub == NULL)
        return -1;
    int r = PyDict_Check(set) ? PyDict_Contains(set, sub) : PySet_Contains(set, sub);
    Py_DECREF(sub);
    return r;
}

/* _prefix_len of chunk[a:b] (b > a). */
static Py_ssize_t
prefix_len(const Chunk *ck, Py_ssize_t a, Py_ssize_t b)
{
    Py_UCS4 c = CH(ck, a);
    if (c == '.') {
        Py_ssize_t i = a;
        while (i < b && CH(ck, i) == '.')
            i++;
        return i - a > 1 ? i - a : 0;
    }
    if (c == '+')
        return (b - a == 1 || !is_digit09(CH(ck, a + 1))) ? 1 : 0;
    if (ck->flags[a] & P1)
        return 1;
    if (b - a >= 3 && c == 'U' && CH(ck, a + 1) == 'S' && CH(ck, a + 2) == '$')
        return 3;
    if (b - a >= 2 && (c == 'C' || c == 'A') && CH(ck, a + 1) == '$')
        return 2;
    return 0;
}

/* _suffix_len of chunk[a:b]; -1 on error. */
static Py_ssize_t
suffix_len(const Chunk *ck, Py_ssize_t a, Py_ssize_t b)
{
    Py_ssize_t n = b - a;
    if (n <= 0)
        return 0;
    if (n > 1 && CH(ck, b - 1) == '.' && CH(ck, b - 2) == '.') {
        Py_ssize_t i = b;
        while (i > a && CH(ck, i - 1) == '.')
            i--;
        return b - i;
    }
    /* a digit in s[-SUFFIX_MAX - 1:-2]: a unit or currency of 2 or more characters may follow it */
    Py_ssize_t lo = b - g_suffix_max - 1 < a ? a : b - g_suffix_max - 1, hi = b - 2;
    int digit = 0;
    for (Py_ssize_t i = lo; i < hi; i++)
        if (is_digit09(CH(ck, i))) {
            digit = 1;
            break;
        }
    if (digit) {
        for (Py_ssize_t k = (g_suffix_max < n - 1 ? g_suffix_max : n - 1); k > 1; k--) {
            if (!is_digit09(CH(ck, b - k - 1)))
                continue;
            int r = slice_in(ck, b - k, b, PyTuple_GET_ITEM(g_after_digit, k));
            if (r < 0)
                return -1;
            if (r)
                return k;
        }
    }
    if (n > 1) {
        int r = slice_in(ck, b - 2, b, g_two_char);
        if (r < 0)
            return -1;
        if (r)
            return 2;
    }
    Py_UCS4 c = CH(ck, b - 1);
    if (ck->flags[b - 1] & S1)
        return 1;
    if (n > 1) {
        Py_UCS4 p = CH(ck, b - 2);
        if (is_digit09(p)) {
            if (c == '+')
                return 1;
            int r = slice_in(ck, b - 1, b, PyTuple_GET_ITEM(g_after_digit, 1));
            if (r < 0)
                return -1;
            if (r)
                return 1;
        }
        if (c == '.') {
            if (ck->flags[b - 2] & DOT_OK)
                return 1;
            if (n > 2 && ((ck->flags[b - 2] & UP && ck->flags[b - 3] & UP)
                          || (CH(ck, b - 3) == 0xB0 && p < 128 && strchr("FfCcKk", (int)p) != NULL && p != 0)))
                return 1;
        }
    }
    return 0;
}

static int
push_slice(PyObject *list, const Chunk *ck, Py_ssize_t lo, Py_ssize_t hi)
{
    PyObject *sub = PyUnicode_Substring(ck->chunk, lo, hi);
    if (sub == NULL)
        return -1;
    int r = PyList_Append(list, sub);
    Py_DECREF(sub);
    return r;
}

static const Py_UCS4 HYPHENS[][4] = {{'-', 0}, {0x2013, 0}, {0x2014, 0}, {'-', '-', 0}, {'-', '-', '-', 0},
                                     {0x2014, 0x2014, 0}, {'~', 0}};

/* Length of the infix match at i of s = chunk[a:b] (0: none), trying spaCy's infix alternatives in order. */
static Py_ssize_t
infix_at(const Chunk *ck, Py_ssize_t a, Py_ssize_t b, Py_ssize_t i)
{
    Py_UCS4 c = CH(ck, i);
    int has_prev = i > a, has_next = i + 1 < b;
    if (c == '.' && has_next && CH(ck, i + 1) == '.') {
        Py_ssize_t j = i;
        while (j < b && CH(ck, j) == '.')
            j++;
        return j - i;
    }
    if (c == 0x2026 || ck->flags[i] & ICON)
        return 1;
    if (has_prev && is_digit09(CH(ck, i - 1)) && (c == '+' || c == '-' || c == '*' || c == '^') && has_next
        && (is_digit09(CH(ck, i + 1)) || CH(ck, i + 1) == '-'))
        return 1;
    if (c == '.' && has_prev && has_next && ck->flags[i - 1] & LOWER_Q && ck->flags[i + 1] & UPPER_Q)
        return 1;
    if (c == ',' && has_prev && has_next && ck->flags[i - 1] & ALPHA && ck->flags[i + 1] & ALPHA)
        return 1;
    if (!has_prev || !(ck->flags[i - 1] & ALPHA || is_digit09(CH(ck, i - 1))))
        return 0;
    for (size_t h = 0; h < sizeof(HYPHENS) / sizeof(HYPHENS[0]); h++) {
        Py_ssize_t k = 0;
        while (HYPHENS[h][k] && i + k < b && CH(ck, i + k) == HYPHENS[h][k])
            k++;
        if (HYPHENS[h][k] == 0 && i + k < b && ck->flags[i + k] & ALPHA)
            return k;
    }
    if ((c == ':' || c == '<' || c == '>' || c == '=' || c == '/') && has_next && ck->flags[i + 1] & ALPHA)
        return 1;
    return 0;
}

/* spaCy's tokens of a chunk that is no special case, as ``_split`` gives them; Py_None when spaCy's second
 * pass could change them (the caller then asks Python's split_chunk); NULL on error. */
static PyObject *
split_general(PyObject *chunk, PyObject *specials)
{
    Chunk ck = {chunk, PyUnicode_GET_LENGTH(chunk), PyUnicode_KIND(chunk), PyUnicode_DATA(chunk), NULL};
    int local[64];
    ck.flags = ck.n <= 64 ? local : PyMem_Malloc((size_t)ck.n * sizeof(int));
    PyObject *pre = NULL, *suf = NULL, *out = NULL;
    if (ck.flags == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < ck.n; i++)
        if ((ck.flags[i] = char_flags(CH(&ck, i))) < 0)
            goto done;
    pre = PyList_New(0);
    suf = PyList_New(0);
    if (pre == NULL || suf == NULL)
        goto done;
    Py_ssize_t a = 0, b = ck.n, last = -1;
    int r;
    while (b > a && b - a != last) {
        if ((r = slice_in(&ck, a, b, specials)) != 0) {
            if (r < 0)
                goto done;
            break;
        }
        last = b - a;
        Py_ssize_t p = prefix_len(&ck, a, b);
        if (p) {
            if ((r = slice_in(&ck, a + p, b, specials)) < 0)
                goto done;
            if (r) {
                if (push_slice(pre, &ck, a, a + p) < 0)
                    goto done;
                a += p;
                break;
            }
        }
        Py_ssize_t s = suffix_len(&ck, a + p, b);
        if (s < 0)
            goto done;
        if (s) {
            if ((r = slice_in(&ck, a, b - s, specials)) < 0)
                goto done;
            if (r) {
                if (push_slice(suf, &ck, b - s, b) < 0)
                    goto done;
                b -= s;
                break;
            }
        }
        if (p && s && p + s <= b - a) {
            if (push_slice(pre, &ck, a, a + p) < 0 || push_slice(suf, &ck, b - s, b) < 0)
                goto done;
            a += p;
            b -= s;
        }
        else if (p) {
            if (push_slice(pre, &ck, a, a + p) < 0)
                goto done;
            a += p;
        }
        else if (s) {
            if (push_slice(suf, &ck, b - s, b) < 0)
                goto done;
            b -= s;
        }
        if (b > a) {
            if ((r = slice_in(&ck, a, b, specials)) < 0)
                goto done;
            if (r)
                break;
        }
    }
    if (b > a) {
        PyObject *core = PyUnicode_Substring(chunk, a, b);
        if (core == NULL)
            goto done;
        PyObject *special = PyDict_GetItemWithError(specials, core); /* borrowed */
        int dot = 0;
        for (Py_ssize_t i = a; i < b && !dot; i++)
            dot = CH(&ck, i) == '.';
        if (special != NULL) {
            Py_DECREF(core);
            PyObject *seq = PySequence_Fast(special, "special cases are sequences");
            if (seq == NULL)
                goto done;
            for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(seq); j++)
                if (PyList_Append(pre, PySequence_Fast_GET_ITEM(seq, j)) < 0) {
                    Py_DECREF(seq);
                    goto done;
                }
            Py_DECREF(seq);
        }
        else if (PyErr_Occurred()) {
            Py_DECREF(core);
            goto done;
        }
        else {
            int url = 0;
            if (dot) {
                PyObject *m = PyObject_CallOneArg(g_url, core);
                if (m == NULL) {
                    Py_DECREF(core);
                    goto done;
                }
                url = m != Py_None;
                Py_DECREF(m);
            }
            Py_ssize_t start = a;
            if (!url) {
                for (Py_ssize_t i = a; i < b;) {
                    Py_ssize_t m = infix_at(&ck, a, b, i);
                    if (!m) {
                        i++;
                        continue;
                    }
                    if (i != a) { /* spaCy ignores an infix at the very start */
                        if ((i != start && push_slice(pre, &ck, start, i) < 0) || push_slice(pre, &ck, i, i + m) < 0) {
                            Py_DECREF(core);
                            goto done;
                        }
                        start = i + m;
                    }
                    i += m;
                }
            }
            if (start == a)
                r = PyList_Append(pre, core);
            else
                r = start < b ? push_slice(pre, &ck, start, b) : 0;
            Py_DECREF(core);
            if (r < 0)
                goto done;
        }
    }
    for (Py_ssize_t j = PyList_GET_SIZE(suf) - 1; j >= 0; j--)
        if (PyList_Append(pre, PyList_GET_ITEM(suf, j)) < 0)
            goto done;
    /* spaCy's second pass joins token runs that spell a special case: leave those chunks to Python */
    for (Py_ssize_t j = 0; j + 1 < PyList_GET_SIZE(pre); j++) {
        PyObject *pair = PyTuple_Pack(2, PyList_GET_ITEM(pre, j), PyList_GET_ITEM(pre, j + 1));
        if (pair == NULL)
            goto done;
        r = PySet_Contains(g_pairs, pair);
        Py_DECREF(pair);
        if (r < 0)
            goto done;
        if (r) {
            Py_INCREF(Py_None);
            out = Py_None;
            goto done;
        }
    }
    Py_INCREF(pre);
    out = pre;
done:
    if (ck.flags != local)
        PyMem_Free(ck.flags);
    Py_XDECREF(pre);
    Py_XDECREF(suf);
    return out;
}

static PyObject *
split_general_py(PyObject *self, PyObject *args)
{
    PyObject *chunk, *specials;
    if (!PyArg_ParseTuple(args, "UO!", &chunk, &PyDict_Type, &specials))
        return NULL;
    if (g_flags == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "chunk_kernel.configure() was not called");
        return NULL;
    }
    return split_general(chunk, specials);
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
            PyObject *tokens = NULL;
            if (g_flags != NULL && !PyDict_Contains(specials, chunk)) {
                tokens = split_general(chunk, specials);
                if (tokens == NULL)
                    goto fail;
                if (tokens == Py_None)
                    Py_CLEAR(tokens);
            }
            if (tokens == NULL)
                tokens = PyObject_CallOneArg(split_chunk, chunk);
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
    {"configure", configure, METH_VARARGS,
     "configure(flags, after_digit, two_char_suffixes, url_fullmatch, affix_pairs, longest_special): the tables"},
    {"split_general", split_general_py, METH_VARARGS,
     "split_general(chunk, specials) -> tokens, or None where spaCy's second pass could apply"},
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
