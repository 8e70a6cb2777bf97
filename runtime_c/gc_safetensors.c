/* graphc runtime: a strict, bounded reader for the safetensors format.
 *
 * Layout of a blob: an 8-byte little-endian u64 N, N bytes of a UTF-8 JSON object (the header, possibly
 * padded with trailing spaces), then the data area. The header maps tensor names to
 *     {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
 * (offsets relative to the start of the data area) and may hold one "__metadata__" object of
 * string -> string entries.
 *
 * The parser is hand-written for exactly that shape of JSON: objects, strings (all escapes, \uXXXX and
 * surrogate pairs decoded to UTF-8, raw UTF-8 validated), non-negative integers and arrays of them.
 * Anything else (floats, true/false, nested structures where the format has none, unknown keys in a
 * tensor entry) is rejected. It never recurses, never reads outside [8, 8 + N) while parsing, and every
 * size computation is checked for overflow. Errors name the byte offset (in the blob) or the tensor.
 *
 * Memory: one malloc'd string pool of N + 8 bytes holds every decoded name, key and value (a decoded
 * string plus its NUL is never longer than its quoted JSON form, so the pool cannot overflow; the
 * writes are bounds-checked anyway), plus the tensor and metadata arrays. After parsing, tensors are
 * sorted by name (bytewise) and metadata by key, which makes duplicate detection O(n log n) and lets
 * gc_st_find / gc_st_meta use binary search. Tensors' data pointers point into the blob; they are not
 * necessarily aligned to the element size unless the writer aligned them (the reference writer does).
 */
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "graphc_rt.h"

#define ST_MAX_DIMS 8
/* Same limit as the reference implementation: a larger header is treated as corrupt. */
#define ST_MAX_HEADER 100000000ull

/* ------------------------------------------------------------------ dtypes */

static const struct {
    const char *file_name; /* spelling in the safetensors header */
    const char *short_name; /* spelling in error messages */
    size_t itemsize;
} dtype_info[] = {
    [GC_F32] = {"F32", "f32", 4}, [GC_F64] = {"F64", "f64", 8},   [GC_F16] = {"F16", "f16", 2},
    [GC_BF16] = {"BF16", "bf16", 2}, [GC_I8] = {"I8", "i8", 1},   [GC_I16] = {"I16", "i16", 2},
    [GC_I32] = {"I32", "i32", 4}, [GC_I64] = {"I64", "i64", 8},   [GC_U8] = {"U8", "u8", 1},
    [GC_BOOL] = {"BOOL", "bool", 1},
};
#define ST_NDTYPES ((int)(sizeof dtype_info / sizeof dtype_info[0]))

static int dtype_from_name(const char *s)
{
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(s, dtype_info[i].file_name) == 0)
            return i;
    return -1;
}

/* "f32[256,784]" */
static void format_type(char *buf, size_t len, int dtype, int ndim, const int64_t *shape)
{
    int w;
    if (dtype >= 0 && dtype < ST_NDTYPES)
        w = snprintf(buf, len, "%s[", dtype_info[dtype].short_name);
    else
        w = snprintf(buf, len, "dtype#%d[", dtype);
    size_t used = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < ndim && used < len; i++) {
        w = snprintf(buf + used, len - used, i ? ",%lld" : "%lld", (long long)shape[i]);
        used += w > 0 ? (size_t)w : 0;
    }
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

/* ------------------------------------------------------------------ errors */

static void set_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ the header parser */

typedef struct parser {
    const unsigned char *buf; /* the whole blob */
    size_t pos;               /* current offset in the blob */
    size_t end;               /* one past the header's last byte */
    char *pool;               /* string pool (becomes st->strings) */
    size_t pool_len, pool_cap;
    gc_st *st;
    size_t tensor_cap, meta_key_cap, meta_value_cap; /* allocated lengths of the arrays in st */
    char *err;
    size_t errlen;
} parser;

static int syntax_error(parser *p, const char *what)
{
    if (p->pos >= p->end)
        set_error(p->err, p->errlen, "safetensors header: %s at byte %zu (end of header)", what, p->pos);
    else
        set_error(p->err, p->errlen, "safetensors header: %s at byte %zu", what, p->pos);
    return GC_ERR_FORMAT;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->end) {
        const unsigned char c = p->buf[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

/* next non-blank byte without consuming it, or -1 at the end of the header */
static int peek(parser *p)
{
    skip_ws(p);
    return p->pos < p->end ? p->buf[p->pos] : -1;
}

static int expect(parser *p, char c)
{
    if (peek(p) != (unsigned char)c) {
        char what[16];
        snprintf(what, sizeof what, "expected '%c'", c);
        return syntax_error(p, what);
    }
    p->pos++;
    return GC_OK;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* the 4 hex digits at p->pos (after "\u"); -1 when malformed */
static long read_hex4(parser *p)
{
    if (p->end - p->pos < 4)
        return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        const int h = hex_value(p->buf[p->pos + (size_t)i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    p->pos += 4;
    return v;
}

/* length of the well-formed UTF-8 sequence starting at s[0] (s has `avail` bytes), 0 if ill-formed */
static size_t utf8_sequence_length(const unsigned char *s, size_t avail)
{
    const unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlong forms */
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

static size_t utf8_encode(unsigned long cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decode the JSON string at the cursor into the pool; *out receives the NUL-terminated result. Callers
 * that only need the string briefly restore p->pool_len afterwards. */
static int parse_string(parser *p, const char **out)
{
    if (peek(p) != '"')
        return syntax_error(p, "expected a string");
    const size_t start = p->pos++;
    char *dst = p->pool + p->pool_len;
    size_t len = 0;
    /* The pool holds header length + 8 bytes and each string needs at most its quoted length, so this
     * cannot trigger; it keeps the writes provably in bounds. */
    const size_t room = p->pool_cap - p->pool_len;
    for (;;) {
        if (p->pos >= p->end) {
            set_error(p->err, p->errlen,
                      "safetensors header: unterminated string starting at byte %zu", start);
            return GC_ERR_FORMAT;
        }
        if (room - len < 5) {
            set_error(p->err, p->errlen, "safetensors header: string pool exhausted at byte %zu", p->pos);
            return GC_ERR_INTERNAL;
        }
        const unsigned char c = p->buf[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20)
            return syntax_error(p, "control character in string");
        if (c >= 0x80) {
            const size_t n = utf8_sequence_length(p->buf + p->pos, p->end - p->pos);
            if (n == 0)
                return syntax_error(p, "invalid UTF-8 in string");
            memcpy(dst + len, p->buf + p->pos, n);
            len += n;
            p->pos += n;
            continue;
        }
        if (c != '\\') {
            dst[len++] = (char)c;
            p->pos++;
            continue;
        }
        if (p->end - p->pos < 2) {
            p->pos++;
            return syntax_error(p, "incomplete escape sequence");
        }
        const unsigned char e = p->buf[p->pos + 1];
        char simple = 0;
        switch (e) {
        case '"': simple = '"'; break;
        case '\\': simple = '\\'; break;
        case '/': simple = '/'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'u': break;
        default: return syntax_error(p, "invalid escape sequence in string");
        }
        if (simple) {
            dst[len++] = simple;
            p->pos += 2;
            continue;
        }
        const size_t esc = p->pos;
        p->pos += 2;
        long cp = read_hex4(p);
        if (cp < 0) {
            p->pos = esc;
            return syntax_error(p, "invalid \\u escape in string");
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            p->pos = esc;
            return syntax_error(p, "unpaired surrogate in \\u escape");
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            long lo = -1;
            if (p->end - p->pos >= 2 && p->buf[p->pos] == '\\' && p->buf[p->pos + 1] == 'u') {
                p->pos += 2;
                lo = read_hex4(p);
            }
            if (lo < 0xDC00 || lo > 0xDFFF) {
                p->pos = esc;
                return syntax_error(p, "unpaired surrogate in \\u escape");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0) {
            p->pos = esc;
            return syntax_error(p, "NUL character (\\u0000) in string");
        }
        len += utf8_encode((unsigned long)cp, dst + len);
    }
    dst[len] = '\0';
    p->pool_len += len + 1;
    *out = dst;
    return GC_OK;
}

/* a non-negative JSON integer no larger than INT64_MAX */
static int parse_integer(parser *p, int64_t *out)
{
    const int c = peek(p);
    if (c == '-')
        return syntax_error(p, "negative integer");
    if (c < '0' || c > '9')
        return syntax_error(p, "expected an integer");
    const size_t start = p->pos;
    uint64_t v = 0;
    while (p->pos < p->end && p->buf[p->pos] >= '0' && p->buf[p->pos] <= '9') {
        const unsigned d = (unsigned)(p->buf[p->pos] - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10) {
            p->pos = start;
            return syntax_error(p, "integer too large");
        }
        v = v * 10 + d;
        p->pos++;
    }
    if (p->pos - start > 1 && p->buf[start] == '0') {
        p->pos = start;
        return syntax_error(p, "integer with a leading zero");
    }
    if (p->pos < p->end && (p->buf[p->pos] == '.' || p->buf[p->pos] == 'e' || p->buf[p->pos] == 'E'))
        return syntax_error(p, "expected an integer, found a fraction or exponent");
    *out = (int64_t)v;
    return GC_OK;
}

/* "[i, j, ...]" with at most `max` entries */
static int parse_int_array(parser *p, const char *tensor, const char *key, int64_t *vals, int max,
                           int *count)
{
    int rc = expect(p, '[');
    if (rc)
        return rc;
    *count = 0;
    if (peek(p) == ']') {
        p->pos++;
        return GC_OK;
    }
    for (;;) {
        if (*count == max) {
            set_error(p->err, p->errlen, "tensor '%s': \"%s\" has more than %d entries at byte %zu", tensor,
                      key, max, p->pos);
            return GC_ERR_FORMAT;
        }
        rc = parse_integer(p, &vals[*count]);
        if (rc)
            return rc;
        ++*count;
        const int c = peek(p);
        if (c == ']') {
            p->pos++;
            return GC_OK;
        }
        if (c != ',')
            return syntax_error(p, "expected ',' or ']'");
        p->pos++;
    }
}

/* room for element `count` in arr (capacity *cap): the array itself, moved when it had to grow, or NULL
 * with *rc set */
static void *grow(parser *p, void *arr, size_t *cap, size_t count, size_t elem, int *rc)
{
    if (count < *cap)
        return arr;
    const size_t ncap = *cap ? *cap * 2 : 16;
    if (ncap > (size_t)INT_MAX || ncap > SIZE_MAX / elem) {
        set_error(p->err, p->errlen, "safetensors header: too many entries at byte %zu", p->pos);
        *rc = GC_ERR_FORMAT;
        return NULL;
    }
    void *n = realloc(arr, ncap * elem);
    if (!n) {
        set_error(p->err, p->errlen, "out of memory while reading the safetensors header");
        *rc = GC_ERR_OUT_OF_MEMORY;
        return NULL;
    }
    *cap = ncap;
    return n;
}

/* offsets inside the data area, and exactly as many bytes as dtype and shape need */
static int check_tensor(parser *p, gc_st_tensor *t, uint64_t begin, uint64_t end)
{
    const size_t data_start = p->end;
    const uint64_t data_size = p->st->size - data_start;
    if (end < begin) {
        set_error(p->err, p->errlen, "tensor '%s': data_offsets [%llu, %llu] end before they begin", t->name,
                  (unsigned long long)begin, (unsigned long long)end);
        return GC_ERR_FORMAT;
    }
    if (end > data_size) {
        set_error(p->err, p->errlen, "tensor '%s': data_offsets [%llu, %llu] exceed the data area (%llu bytes)",
                  t->name, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_size);
        return GC_ERR_FORMAT;
    }
    /* element count: 0 as soon as one dim is 0, otherwise a checked product */
    uint64_t count = 1;
    int overflow = 0;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] == 0)
            count = 0;
    for (int d = 0; d < t->ndim && count != 0; d++) {
        const uint64_t dim = (uint64_t)t->shape[d];
        if (count > UINT64_MAX / dim) {
            overflow = 1;
            break;
        }
        count *= dim;
    }
    const uint64_t itemsize = dtype_info[t->dtype].itemsize;
    char type[256];
    format_type(type, sizeof type, t->dtype, t->ndim, t->shape);
    if (overflow || count > UINT64_MAX / itemsize) {
        set_error(p->err, p->errlen, "tensor '%s': shape %s is too large", t->name, type);
        return GC_ERR_FORMAT;
    }
    if (count * itemsize != end - begin) {
        set_error(p->err, p->errlen,
                  "tensor '%s': shape %s needs %llu bytes but data_offsets [%llu, %llu] hold %llu", t->name, type,
                  (unsigned long long)(count * itemsize), (unsigned long long)begin, (unsigned long long)end,
                  (unsigned long long)(end - begin));
        return GC_ERR_FORMAT;
    }
    t->data = p->st->blob + data_start + begin;
    t->nbytes = (size_t)(end - begin);
    return GC_OK;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]}; `name` is already in the pool */
static int parse_tensor(parser *p, const char *name)
{
    gc_st *st = p->st;
    int rc = GC_OK;
    gc_st_tensor *tensors = grow(p, st->tensors, &p->tensor_cap, (size_t)st->ntensors, sizeof *tensors, &rc);
    if (!tensors)
        return rc;
    st->tensors = tensors;
    gc_st_tensor *t = &st->tensors[st->ntensors];
    memset(t, 0, sizeof *t);
    t->name = name;
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    int64_t offsets[2] = {0, 0};

    if ((rc = expect(p, '{')))
        return rc;
    if (peek(p) == '}') {
        p->pos++;
    } else {
        for (;;) {
            skip_ws(p);
            const size_t key_pos = p->pos, mark = p->pool_len;
            const char *key;
            if ((rc = parse_string(p, &key)) || (rc = expect(p, ':')))
                return rc;
            int *seen;
            if (strcmp(key, "dtype") == 0)
                seen = &have_dtype;
            else if (strcmp(key, "shape") == 0)
                seen = &have_shape;
            else if (strcmp(key, "data_offsets") == 0)
                seen = &have_offsets;
            else {
                set_error(p->err, p->errlen, "tensor '%s': unexpected key '%s' at byte %zu", name, key,
                          key_pos);
                return GC_ERR_FORMAT;
            }
            if (*seen) {
                set_error(p->err, p->errlen, "tensor '%s': duplicate key '%s' at byte %zu", name, key,
                          key_pos);
                return GC_ERR_FORMAT;
            }
            *seen = 1;
            if (seen == &have_dtype) {
                skip_ws(p);
                const size_t value_pos = p->pos;
                const char *dt;
                if ((rc = parse_string(p, &dt)))
                    return rc;
                t->dtype = dtype_from_name(dt);
                if (t->dtype < 0) {
                    set_error(p->err, p->errlen, "tensor '%s': unknown dtype '%s' at byte %zu", name, dt,
                              value_pos);
                    return GC_ERR_FORMAT;
                }
            } else if (seen == &have_shape) {
                if ((rc = parse_int_array(p, name, "shape", t->shape, ST_MAX_DIMS, &t->ndim)))
                    return rc;
            } else {
                int n;
                skip_ws(p);
                const size_t value_pos = p->pos;
                if ((rc = parse_int_array(p, name, "data_offsets", offsets, 2, &n)))
                    return rc;
                if (n != 2) {
                    set_error(p->err, p->errlen, "tensor '%s': data_offsets needs 2 entries, has %d at byte %zu",
                              name, n, value_pos);
                    return GC_ERR_FORMAT;
                }
            }
            p->pool_len = mark; /* the key and the dtype string are not kept */
            const int c = peek(p);
            if (c == '}') {
                p->pos++;
                break;
            }
            if (c != ',')
                return syntax_error(p, "expected ',' or '}'");
            p->pos++;
        }
    }
    if (!have_dtype || !have_shape || !have_offsets) {
        set_error(p->err, p->errlen, "tensor '%s': missing \"%s\" before byte %zu", name,
                  !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets", p->pos);
        return GC_ERR_FORMAT;
    }
    if ((rc = check_tensor(p, t, (uint64_t)offsets[0], (uint64_t)offsets[1])))
        return rc;
    st->ntensors++;
    return GC_OK;
}

/* "__metadata__": {"key": "value", ...} or null */
static int parse_metadata(parser *p)
{
    gc_st *st = p->st;
    if (peek(p) == 'n') {
        if (p->end - p->pos >= 4 && memcmp(p->buf + p->pos, "null", 4) == 0) {
            p->pos += 4;
            return GC_OK;
        }
        return syntax_error(p, "expected an object");
    }
    int rc = expect(p, '{');
    if (rc)
        return rc;
    if (peek(p) == '}') {
        p->pos++;
        return GC_OK;
    }
    for (;;) {
        const char *key, *value;
        if ((rc = parse_string(p, &key)) || (rc = expect(p, ':')))
            return rc;
        if (peek(p) != '"')
            return syntax_error(p, "expected a string (__metadata__ values are strings)");
        if ((rc = parse_string(p, &value)))
            return rc;
        char **keys = grow(p, st->meta_keys, &p->meta_key_cap, (size_t)st->nmeta, sizeof *keys, &rc);
        if (!keys)
            return rc;
        st->meta_keys = keys;
        char **values = grow(p, st->meta_values, &p->meta_value_cap, (size_t)st->nmeta, sizeof *values, &rc);
        if (!values)
            return rc;
        st->meta_values = values;
        st->meta_keys[st->nmeta] = (char *)key;
        st->meta_values[st->nmeta] = (char *)value;
        st->nmeta++;
        const int c = peek(p);
        if (c == '}') {
            p->pos++;
            return GC_OK;
        }
        if (c != ',')
            return syntax_error(p, "expected ',' or '}'");
        p->pos++;
    }
}

static int parse_header(parser *p)
{
    int rc = expect(p, '{');
    if (rc)
        return rc;
    int have_metadata = 0;
    if (peek(p) == '}') {
        p->pos++;
    } else {
        for (;;) {
            skip_ws(p);
            const size_t key_pos = p->pos, mark = p->pool_len;
            const char *key;
            if ((rc = parse_string(p, &key)) || (rc = expect(p, ':')))
                return rc;
            if (strcmp(key, "__metadata__") == 0) {
                if (have_metadata) {
                    set_error(p->err, p->errlen, "safetensors header: duplicate __metadata__ at byte %zu",
                              key_pos);
                    return GC_ERR_FORMAT;
                }
                have_metadata = 1;
                p->pool_len = mark;
                rc = parse_metadata(p);
            } else {
                rc = parse_tensor(p, key);
            }
            if (rc)
                return rc;
            const int c = peek(p);
            if (c == '}') {
                p->pos++;
                break;
            }
            if (c != ',')
                return syntax_error(p, "expected ',' or '}'");
            p->pos++;
        }
    }
    skip_ws(p);
    if (p->pos != p->end)
        return syntax_error(p, "unexpected data after the header object");
    return GC_OK;
}

/* ------------------------------------------------------------------ validation */

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const gc_st_tensor *)a)->name, ((const gc_st_tensor *)b)->name);
}

typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

typedef struct meta_pair {
    char *key, *value;
} meta_pair;

static int cmp_meta(const void *a, const void *b)
{
    return strcmp(((const meta_pair *)a)->key, ((const meta_pair *)b)->key);
}

static int check_duplicate_names(gc_st *st, char *err, size_t errlen)
{
    if (st->ntensors < 2)
        return GC_OK;
    qsort(st->tensors, (size_t)st->ntensors, sizeof *st->tensors, cmp_tensor_name);
    for (int i = 1; i < st->ntensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
            set_error(err, errlen, "duplicate tensor name '%s'", st->tensors[i].name);
            return GC_ERR_FORMAT;
        }
    return GC_OK;
}

static int check_overlaps(const gc_st *st, size_t data_start, char *err, size_t errlen)
{
    if (st->ntensors < 2)
        return GC_OK;
    span *spans = malloc((size_t)st->ntensors * sizeof *spans);
    if (!spans) {
        set_error(err, errlen, "out of memory while checking the safetensors header");
        return GC_ERR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < st->ntensors; i++) {
        const gc_st_tensor *t = &st->tensors[i];
        const uint64_t begin = (uint64_t)((const unsigned char *)t->data - (st->blob + data_start));
        spans[i] = (span){begin, begin + t->nbytes, t->name};
    }
    qsort(spans, (size_t)st->ntensors, sizeof *spans, cmp_span);
    int rc = GC_OK;
    const span *owner = NULL; /* the span reaching furthest so far */
    for (int i = 0; i < st->ntensors; i++) {
        const span *s = &spans[i];
        if (s->begin == s->end)
            continue; /* empty tensors occupy nothing */
        if (owner && s->begin < owner->end) {
            set_error(err, errlen, "tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", owner->name,
                      (unsigned long long)owner->begin, (unsigned long long)owner->end, s->name,
                      (unsigned long long)s->begin, (unsigned long long)s->end);
            rc = GC_ERR_FORMAT;
            break;
        }
        if (!owner || s->end > owner->end)
            owner = s;
    }
    free(spans);
    return rc;
}

/* sort metadata by key (for binary search) and reject duplicate keys */
static int sort_metadata(gc_st *st, char *err, size_t errlen)
{
    if (st->nmeta < 2)
        return GC_OK;
    meta_pair *pairs = malloc((size_t)st->nmeta * sizeof *pairs);
    if (!pairs) {
        set_error(err, errlen, "out of memory while checking the safetensors header");
        return GC_ERR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < st->nmeta; i++)
        pairs[i] = (meta_pair){st->meta_keys[i], st->meta_values[i]};
    qsort(pairs, (size_t)st->nmeta, sizeof *pairs, cmp_meta);
    int rc = GC_OK;
    for (int i = 0; i < st->nmeta; i++) {
        st->meta_keys[i] = pairs[i].key;
        st->meta_values[i] = pairs[i].value;
        if (rc == GC_OK && i > 0 && strcmp(pairs[i - 1].key, pairs[i].key) == 0) {
            set_error(err, errlen, "duplicate __metadata__ key '%s'", pairs[i].key);
            rc = GC_ERR_FORMAT;
        }
    }
    free(pairs);
    return rc;
}

/* ------------------------------------------------------------------ public API */

int gc_st_open_memory(gc_st *st, const void *blob, size_t size, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!st) {
        set_error(err, errlen, "gc_st_open_memory: null gc_st");
        return GC_ERR_INVALID_ARGUMENT;
    }
    memset(st, 0, sizeof *st);
    if (!blob && size) {
        set_error(err, errlen, "gc_st_open_memory: null blob");
        return GC_ERR_INVALID_ARGUMENT;
    }
    if (size < 8) {
        set_error(err, errlen, "file is %zu bytes, too short for a safetensors header", size);
        return GC_ERR_FORMAT;
    }
    const unsigned char *b = blob;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | b[i];
    if (header_len > (uint64_t)(size - 8)) {
        set_error(err, errlen, "safetensors header length %llu exceeds the file size (%zu bytes)",
                  (unsigned long long)header_len, size);
        return GC_ERR_FORMAT;
    }
    if (header_len > ST_MAX_HEADER) {
        set_error(err, errlen, "safetensors header length %llu exceeds the %llu-byte limit",
                  (unsigned long long)header_len, ST_MAX_HEADER);
        return GC_ERR_FORMAT;
    }
    st->blob = b;
    st->size = size;

    parser p = {0};
    p.buf = b;
    p.pos = 8;
    p.end = 8 + (size_t)header_len;
    p.pool_cap = (size_t)header_len + 8;
    p.pool = malloc(p.pool_cap);
    p.st = st;
    p.err = err;
    p.errlen = errlen;
    if (!p.pool) {
        set_error(err, errlen, "out of memory while reading the safetensors header");
        return GC_ERR_OUT_OF_MEMORY;
    }
    st->strings = p.pool;
    int rc = parse_header(&p);
    if (rc == GC_OK)
        rc = check_duplicate_names(st, err, errlen);
    if (rc == GC_OK)
        rc = check_overlaps(st, p.end, err, errlen);
    if (rc == GC_OK)
        rc = sort_metadata(st, err, errlen);
    if (rc != GC_OK) {
        st->mapped = 0; /* the blob belongs to the caller */
        gc_st_close(st);
    }
    return rc;
}

/* read up to size bytes at offset 0 of fd into buf; returns the count read (short: end of file), -1 on error */
static ssize_t read_all(int fd, unsigned char *buf, size_t size)
{
    size_t got = 0;
    while (got < size) {
        const size_t chunk = size - got < ((size_t)1 << 30) ? size - got : ((size_t)1 << 30);
        const ssize_t r = pread(fd, buf + got, chunk, (off_t)got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int gc_st_open_file(gc_st *st, const char *path, char *err, size_t errlen)
{
    return gc_st_load_file(st, path, 1, err, errlen);
}

int gc_st_read_file(gc_st *st, const char *path, char *err, size_t errlen)
{
    return gc_st_load_file(st, path, 0, err, errlen);
}

int gc_st_load_file(gc_st *st, const char *path, int map_file, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!st || !path) {
        set_error(err, errlen, "gc_st_load_file: null argument");
        return GC_ERR_INVALID_ARGUMENT;
    }
    memset(st, 0, sizeof *st);
    int flags = O_RDONLY;
#ifdef O_CLOEXEC
    flags |= O_CLOEXEC;
#endif
#ifdef O_NONBLOCK
    flags |= O_NONBLOCK; /* a FIFO must not block the open; it is rejected as not a regular file below */
#endif
    const int fd = open(path, flags);
    if (fd < 0) {
        set_error(err, errlen, "cannot open weights file '%s': %s", path, strerror(errno));
        return GC_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        set_error(err, errlen, "cannot stat weights file '%s': %s", path, strerror(errno));
        close(fd);
        return GC_ERR_IO;
    }
    if (!S_ISREG(sb.st_mode)) {
        set_error(err, errlen, "weights file '%s' is not a regular file", path);
        close(fd);
        return GC_ERR_IO;
    }
    if (sb.st_size < 8) {
        set_error(err, errlen, "file is %lld bytes, too short for a safetensors header", (long long)sb.st_size);
        close(fd);
        return GC_ERR_FORMAT;
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        set_error(err, errlen, "weights file '%s' is too large to map", path);
        close(fd);
        return GC_ERR_IO;
    }
    const size_t size = (size_t)sb.st_size;
    if (!map_file) {
        /* a private copy, 64-byte aligned like the mapping's page: nothing done to the file later reaches it */
        unsigned char *copy = size > SIZE_MAX - 64 ? NULL : aligned_alloc(64, (size + 63) / 64 * 64);
        if (!copy) {
            set_error(err, errlen, "out of memory for a copy of weights file '%s' (%zu bytes)", path, size);
            close(fd);
            return GC_ERR_OUT_OF_MEMORY;
        }
        const ssize_t got = read_all(fd, copy, size);
        const int read_errno = errno;
        close(fd);
        if (got < 0 || (size_t)got != size) {
            if (got < 0)
                set_error(err, errlen, "cannot read weights file '%s': %s", path, strerror(read_errno));
            else
                set_error(err, errlen, "weights file '%s' shrank while it was read (%zu of %zu bytes)", path,
                          (size_t)got, size);
            free(copy);
            return got < 0 ? GC_ERR_IO : GC_ERR_FORMAT;
        }
        const int rc = gc_st_open_memory(st, copy, size, err, errlen);
        if (rc != GC_OK) {
            free(copy);
            return rc;
        }
        st->owned = 1;
        return GC_OK;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_errno = errno;
    close(fd); /* the mapping stays valid */
    if (map == MAP_FAILED) {
        set_error(err, errlen, "cannot map weights file '%s': %s", path, strerror(map_errno));
        return GC_ERR_IO;
    }
    const int rc = gc_st_open_memory(st, map, size, err, errlen);
    if (rc != GC_OK) {
        munmap(map, size);
        return rc;
    }
    st->mapped = 1;
    return GC_OK;
}

void gc_st_close(gc_st *st)
{
    if (!st)
        return;
    if (st->mapped && st->blob)
        munmap((void *)st->blob, st->size);
    if (st->owned)
        free((void *)st->blob);
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_values);
    free(st->strings);
    memset(st, 0, sizeof *st);
}

const gc_st_tensor *gc_st_find(const gc_st *st, const char *name)
{
    if (!st || !name || st->ntensors <= 0 || !st->tensors)
        return NULL;
    gc_st_tensor key;
    memset(&key, 0, sizeof key);
    key.name = name;
    return bsearch(&key, st->tensors, (size_t)st->ntensors, sizeof *st->tensors, cmp_tensor_name);
}

const char *gc_st_meta(const gc_st *st, const char *key)
{
    if (!st || !key || st->nmeta <= 0 || !st->meta_keys)
        return NULL;
    int lo = 0, hi = st->nmeta - 1;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2;
        const int c = strcmp(key, st->meta_keys[mid]);
        if (c == 0)
            return st->meta_values[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

int gc_st_expect(const gc_st *st, const char *name, int dtype, int ndim, const int64_t *shape,
                 const void **data, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!st || !name || ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape)) {
        set_error(err, errlen, "gc_st_expect: invalid arguments for tensor '%s'", name ? name : "(null)");
        return GC_ERR_INVALID_ARGUMENT;
    }
    const gc_st_tensor *t = gc_st_find(st, name);
    if (!t) {
        set_error(err, errlen, "tensor '%s' not found in weights", name);
        return GC_ERR_MISMATCH;
    }
    int same = t->dtype == dtype && t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char want[256], have[256];
        format_type(want, sizeof want, dtype, ndim, shape);
        format_type(have, sizeof have, t->dtype, t->ndim, t->shape);
        set_error(err, errlen, "tensor '%s': expected %s, file has %s", name, want, have);
        return GC_ERR_MISMATCH;
    }
    if (data)
        *data = t->data;
    return GC_OK;
}
