#include "cbor.h"
#include <string.h>

#define MAX_DEPTH 8

bool cbor_read(cbor_reader *r, cbor_item *item)
{
    if (r->pos >= r->len) return false;
    uint8_t initial = r->buf[r->pos++];
    uint8_t info = initial & 0x1f;
    uint64_t v = info;
    if (info >= 24 && info <= 27) {
        size_t n = (size_t)1 << (info - 24);
        if (r->len - r->pos < n) return false;
        v = 0;
        for (size_t i = 0; i < n; i++) v = (v << 8) | r->buf[r->pos++];
    } else if (info > 27) {
        return false; /* indefinite lengths are not sent by SMP clients; refuse rather than misparse */
    }
    item->type = (enum cbor_type)(initial >> 5);
    item->value = v;
    item->ptr = NULL;
    if (item->type == CBOR_BSTR || item->type == CBOR_TSTR) {
        if (v > r->len - r->pos) return false;
        item->ptr = r->buf + r->pos;
        r->pos += (size_t)v;
    }
    return true;
}

static bool skip_depth(cbor_reader *r, int depth)
{
    cbor_item item;
    if (depth > MAX_DEPTH || !cbor_read(r, &item)) return false;
    uint64_t children = item.type == CBOR_ARRAY ? item.value : item.type == CBOR_MAP ? 2 * item.value
                      : item.type == CBOR_TAG ? 1 : 0;
    if (children > r->len) return false;
    for (uint64_t i = 0; i < children; i++) {
        if (!skip_depth(r, depth + 1)) return false;
    }
    return true;
}

bool cbor_skip(cbor_reader *r)
{
    return skip_depth(r, 0);
}

bool cbor_map_get(const uint8_t *buf, size_t len, const char *key, cbor_item *out)
{
    cbor_reader r = {buf, len, 0};
    cbor_item map;
    if (!cbor_read(&r, &map) || map.type != CBOR_MAP) return false;
    size_t klen = strlen(key);
    for (uint64_t i = 0; i < map.value; i++) {
        cbor_item k;
        if (!cbor_read(&r, &k)) return false;
        if (k.type == CBOR_TSTR && k.value == klen && memcmp(k.ptr, key, klen) == 0) {
            size_t at = r.pos;
            if (!cbor_read(&r, out)) return false;
            /* A container value is handed back positioned at its head so the caller can walk it. */
            if (out->type == CBOR_ARRAY || out->type == CBOR_MAP) out->ptr = buf + at;
            return true;
        }
        if (k.type == CBOR_ARRAY || k.type == CBOR_MAP || k.type == CBOR_TAG) return false;
        if (!cbor_skip(&r)) return false;
    }
    return false;
}

static void put(cbor_writer *w, const uint8_t *p, size_t n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = true;
        return;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void cbor_put_head(cbor_writer *w, uint8_t major, uint64_t v)
{
    uint8_t b[9];
    size_t n;
    uint8_t m = (uint8_t)(major << 5);
    if (v < 24) { b[0] = m | (uint8_t)v; n = 1; }
    else if (v <= 0xff) { b[0] = m | 24; n = 2; }
    else if (v <= 0xffff) { b[0] = m | 25; n = 3; }
    else if (v <= 0xffffffffu) { b[0] = m | 26; n = 5; }
    else { b[0] = m | 27; n = 9; }
    for (size_t i = 1; i < n; i++) b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    put(w, b, n);
}

void cbor_put_map(cbor_writer *w, size_t pairs) { cbor_put_head(w, 5, pairs); }
void cbor_put_array(cbor_writer *w, size_t items) { cbor_put_head(w, 4, items); }
void cbor_put_uint(cbor_writer *w, uint64_t v) { cbor_put_head(w, 0, v); }

void cbor_put_int(cbor_writer *w, int64_t v)
{
    if (v >= 0) cbor_put_head(w, 0, (uint64_t)v);
    else cbor_put_head(w, 1, (uint64_t)(-1 - v));
}

void cbor_put_tstrn(cbor_writer *w, const uint8_t *s, size_t n)
{
    cbor_put_head(w, 3, n);
    put(w, s, n);
}

void cbor_put_tstr(cbor_writer *w, const char *s) { cbor_put_tstrn(w, (const uint8_t *)s, strlen(s)); }

void cbor_put_bstr(cbor_writer *w, const uint8_t *s, size_t n)
{
    cbor_put_head(w, 2, n);
    put(w, s, n);
}

void cbor_put_bool(cbor_writer *w, bool v)
{
    uint8_t b = v ? 0xf5 : 0xf4;
    put(w, &b, 1);
}
