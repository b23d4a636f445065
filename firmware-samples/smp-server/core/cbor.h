#ifndef CBOR_H
#define CBOR_H
/* The CBOR subset SMP requests use: definite-length maps with text keys; uint, nint, bstr, tstr, bool. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cbor_type { CBOR_UINT, CBOR_NINT, CBOR_BSTR, CBOR_TSTR, CBOR_ARRAY, CBOR_MAP, CBOR_TAG, CBOR_SIMPLE };

typedef struct {
    enum cbor_type type;
    uint64_t value;      /* integer value, length of a string, count of an array/map, simple value */
    const uint8_t *ptr;  /* string contents */
} cbor_item;

typedef struct {
    const uint8_t *buf;
    size_t len;
    size_t pos;
} cbor_reader;

bool cbor_read(cbor_reader *r, cbor_item *item);
bool cbor_skip(cbor_reader *r);
/* Finds `key` in the top-level map of `buf`. Returns false when absent or malformed. */
bool cbor_map_get(const uint8_t *buf, size_t len, const char *key, cbor_item *out);

typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
    bool overflow;
} cbor_writer;

void cbor_put_head(cbor_writer *w, uint8_t major, uint64_t value);
void cbor_put_map(cbor_writer *w, size_t pairs);
void cbor_put_array(cbor_writer *w, size_t items);
void cbor_put_uint(cbor_writer *w, uint64_t v);
void cbor_put_int(cbor_writer *w, int64_t v);
void cbor_put_tstr(cbor_writer *w, const char *s);
void cbor_put_tstrn(cbor_writer *w, const uint8_t *s, size_t n);
void cbor_put_bstr(cbor_writer *w, const uint8_t *s, size_t n);
void cbor_put_bool(cbor_writer *w, bool v);

#endif
