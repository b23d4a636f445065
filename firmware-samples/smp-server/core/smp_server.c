/*
 * SMP server with a two-slot model of MCUboot's swap: upload into the secondary slot, test/confirm through the
 * image state command, and at boot a pending image is validated and swapped in on trial; a trial that was not
 * confirmed before the next reset is swapped back. The uploaded image is data, not code: the "app" reports the
 * primary slot's header version and reads one flag from its payload (HEALTH_FAIL_MARKER) to fail health checks.
 */
#include "smp_server.h"
#include "cbor.h"
#include "port.h"
#include "sha256.h"
#include "smp_frame.h"
#include <string.h>

#define IMAGE_MAGIC 0x96f3b83du
#define TLV_INFO_MAGIC 0x6907u
#define TLV_PROT_INFO_MAGIC 0x6908u
#define TLV_SHA256 0x10u
#define HEALTH_FAIL_MARKER "SMP-SAMPLE:HEALTH=FAIL"

/* MGMT_ERR_* values shared by SMP v1 rc and v2 err.rc. */
#define ERR_EUNKNOWN 1
#define ERR_EINVAL 3
#define ERR_ENOENT 5
#define ERR_EBADSTATE 6
#define ERR_EMSGSIZE 7
#define ERR_ENOTSUP 8

struct image_info {
    int valid;
    uint32_t total;      /* header + body + TLV areas */
    uint32_t hashed;     /* header + body + protected TLVs */
    const uint8_t *hash; /* SHA-256 TLV value */
    char version[32];
};

static struct persist *store;
static uint8_t rx_frame[SMP_BUF_SIZE + 8];
static uint8_t tx_buf[1024];
static smp_rx rx;
static int unhealthy;
static uint16_t buf_size = SMP_BUF_SIZE;
static uint8_t buf_count = 2;

/* Kept after completion too (known, not active), as Zephyr keeps it: a late retry of the last chunk is then
 * answered with off = len instead of an error that would make the client start over. */
static struct {
    int known;
    int active;
    uint32_t len;
    uint32_t off;
    uint8_t sha[32];
} upload;

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static char *put_dec(char *p, uint32_t v)
{
    char tmp[10];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

/* Parses an image header and TLVs in a slot; `check_hash` recomputes the SHA-256 the way MCUboot does. */
static struct image_info image_info(const uint8_t *slot, int check_hash)
{
    struct image_info info;
    memset(&info, 0, sizeof info);
    if (le32(slot) != IMAGE_MAGIC) return info;
    uint32_t hdr = le16(slot + 8), prot = le16(slot + 10), body = le32(slot + 12);
    if (hdr < 32 || body > SLOT_SIZE || hdr + body + prot + 4 > SLOT_SIZE) return info;
    uint32_t pos = hdr + body;
    if (prot) {
        if (le16(slot + pos) != TLV_PROT_INFO_MAGIC || le16(slot + pos + 2) != prot) return info;
        pos += prot;
    }
    info.hashed = pos;
    if (le16(slot + pos) != TLV_INFO_MAGIC) return info;
    uint32_t end = pos + le16(slot + pos + 2);
    if (end > SLOT_SIZE) return info;
    for (uint32_t t = pos + 4; t + 4 <= end;) {
        uint16_t type = le16(slot + t), len = le16(slot + t + 2);
        if (type == TLV_SHA256 && len == 32 && t + 4u + len <= end) info.hash = slot + t + 4;
        t += 4u + len;
    }
    if (!info.hash) return info;
    if (check_hash) {
        uint8_t digest[32];
        sha256(slot, info.hashed, digest);
        if (memcmp(digest, info.hash, 32) != 0) return info;
    }
    char *v = info.version;
    v = put_dec(v, slot[20]); *v++ = '.';
    v = put_dec(v, slot[21]); *v++ = '.';
    v = put_dec(v, le16(slot + 22));
    uint32_t build = le32(slot + 24);
    if (build) { *v++ = '.'; v = put_dec(v, build); }
    *v = 0;
    info.total = end;
    info.valid = 1;
    return info;
}

static void write_factory_image(const struct smp_server_config *c)
{
    /* A blank device gets a real MCUboot image, so it reports a version and a hash like any other. */
    static const char payload[] = "edge-ota SMP sample factory image\n";
    uint8_t *s = store->slot[0];
    uint32_t body = sizeof payload - 1;
    memset(s, 0xff, SLOT_SIZE);
    memset(s, 0, 32);
    s[0] = 0x3d; s[1] = 0xb8; s[2] = 0xf3; s[3] = 0x96;
    s[8] = 32;
    s[12] = (uint8_t)body;
    s[20] = c->factory_major; s[21] = c->factory_minor;
    s[22] = (uint8_t)c->factory_revision; s[23] = (uint8_t)(c->factory_revision >> 8);
    memcpy(s + 32, payload, body);
    uint8_t *tlv = s + 32 + body;
    tlv[0] = 0x07; tlv[1] = 0x69; tlv[2] = 40; tlv[3] = 0;
    tlv[4] = TLV_SHA256; tlv[5] = 0; tlv[6] = 32; tlv[7] = 0;
    sha256(s, 32 + body, tlv + 8);
}

static void swap_slots(void)
{
    /* A real swap moves sector by sector through a scratch area and survives power loss; here RAM/file is flat. */
    static uint8_t tmp[4096];
    for (uint32_t off = 0; off < SLOT_SIZE; off += sizeof tmp) {
        memcpy(tmp, store->slot[0] + off, sizeof tmp);
        memcpy(store->slot[0] + off, store->slot[1] + off, sizeof tmp);
        memcpy(store->slot[1] + off, tmp, sizeof tmp);
    }
}

static int find_marker(const uint8_t *hay, uint32_t len)
{
    size_t m = sizeof HEALTH_FAIL_MARKER - 1;
    for (uint32_t i = 0; i + m <= len; i++) {
        if (hay[i] == 'S' && memcmp(hay + i, HEALTH_FAIL_MARKER, m) == 0) return 1;
    }
    return 0;
}

void smp_log(const char *a, const char *b)
{
    port_write((const uint8_t *)"[smp-sample] ", 13);
    port_write((const uint8_t *)a, strlen(a));
    if (b) port_write((const uint8_t *)b, strlen(b));
    port_write((const uint8_t *)"\r\n", 2);
}

void smp_server_boot(const struct smp_server_config *config)
{
    store = port_persist();
    if (store->magic != PERSIST_MAGIC) {
        memset(store, 0, sizeof *store - sizeof store->slot);
        memset(store->slot[1], 0xff, SLOT_SIZE);
        write_factory_image(config);
        store->magic = PERSIST_MAGIC;
    }
    store->boot_count++;
    if (store->trial) {
        smp_log("boot: trial image not confirmed, reverting", NULL);
        swap_slots();
        store->trial = 0;
    } else if (store->pending) {
        if (image_info(store->slot[1], 1).valid) {
            swap_slots();
            store->trial = store->permanent ? 0 : 1;
            smp_log("boot: swapped in the pending image", store->trial ? " on trial" : " permanently");
        } else {
            /* MCUboot erases a secondary image that fails validation and boots the primary. */
            smp_log("boot: pending image failed validation, erased", NULL);
            memset(store->slot[1], 0xff, SLOT_SIZE);
        }
    }
    store->pending = 0;
    store->permanent = 0;
    port_persist_sync();

    struct image_info running = image_info(store->slot[0], 0);
    unhealthy = running.valid ? find_marker(store->slot[0], running.hashed) : 1;
    smp_log("app: running version ", running.valid ? running.version : "(none)");
    if (config->buf_size && config->buf_size <= SMP_BUF_SIZE) buf_size = config->buf_size;
    if (config->buf_count) buf_count = config->buf_count;
    /* A frame holds length + packet + CRC: anything longer than buf_size allows is dropped, as on a device. */
    smp_rx_init(&rx, rx_frame, (size_t)buf_size + 4);
}

/* ---- replies ---- */

struct request {
    uint8_t version, op, flags;
    uint16_t group;
    uint8_t seq, command;
    const uint8_t *body;
    size_t body_len;
};

static cbor_writer reply_writer(void)
{
    cbor_writer w = {tx_buf + 8, sizeof tx_buf - 8, 0, false};
    return w;
}

static void send_error(const struct request *r, int rc);

static void send_reply(const struct request *r, cbor_writer *w)
{
    if (w->overflow) {
        /* Say so rather than stay silent: a client would otherwise wait out its timeout and retry in vain. */
        send_error(r, ERR_EMSGSIZE);
        return;
    }
    tx_buf[0] = (uint8_t)((r->version & 3) << 3 | ((r->op + 1) & 7));
    tx_buf[1] = 0;
    tx_buf[2] = (uint8_t)(w->len >> 8);
    tx_buf[3] = (uint8_t)w->len;
    tx_buf[4] = (uint8_t)(r->group >> 8);
    tx_buf[5] = (uint8_t)r->group;
    tx_buf[6] = r->seq;
    tx_buf[7] = r->command;
    smp_tx_packet(tx_buf, 8 + w->len);
}

static void send_error(const struct request *r, int rc)
{
    cbor_writer w = reply_writer();
    if (r->version == 1) {
        cbor_put_map(&w, 1);
        cbor_put_tstr(&w, "err");
        cbor_put_map(&w, 2);
        cbor_put_tstr(&w, "group");
        cbor_put_uint(&w, r->group);
        cbor_put_tstr(&w, "rc");
        cbor_put_uint(&w, (uint64_t)rc);
    } else {
        cbor_put_map(&w, 1);
        cbor_put_tstr(&w, "rc");
        cbor_put_uint(&w, (uint64_t)rc);
    }
    send_reply(r, &w);
}

/* ---- OS group ---- */

static void os_echo(const struct request *r)
{
    cbor_item d;
    if (!cbor_map_get(r->body, r->body_len, "d", &d) || d.type != CBOR_TSTR) { send_error(r, ERR_EINVAL); return; }
    cbor_writer w = reply_writer();
    cbor_put_map(&w, 1);
    cbor_put_tstr(&w, "r");
    /* The health-check hook: an image carrying the marker answers echo wrongly. */
    if (unhealthy) cbor_put_tstr(&w, "unhealthy");
    else cbor_put_tstrn(&w, d.ptr, (size_t)d.value);
    send_reply(r, &w);
}

static void os_params(const struct request *r)
{
    cbor_writer w = reply_writer();
    cbor_put_map(&w, 2);
    cbor_put_tstr(&w, "buf_size");
    cbor_put_uint(&w, buf_size);
    cbor_put_tstr(&w, "buf_count");
    cbor_put_uint(&w, buf_count);
    send_reply(r, &w);
}

static void os_reset(const struct request *r)
{
    cbor_writer w = reply_writer();
    cbor_put_map(&w, 0);
    send_reply(r, &w);
    port_flush();
    port_persist_sync();
    port_reset();
}

/* ---- image group ---- */

static void put_slot(cbor_writer *w, int slot, const struct image_info *info)
{
    cbor_put_map(w, 9);
    cbor_put_tstr(w, "image"); cbor_put_uint(w, 0);
    cbor_put_tstr(w, "slot"); cbor_put_uint(w, (uint64_t)slot);
    cbor_put_tstr(w, "version"); cbor_put_tstr(w, info->version);
    cbor_put_tstr(w, "hash"); cbor_put_bstr(w, info->hash, 32);
    cbor_put_tstr(w, "bootable"); cbor_put_bool(w, true);
    cbor_put_tstr(w, "pending"); cbor_put_bool(w, slot == 1 && store->pending);
    cbor_put_tstr(w, "confirmed"); cbor_put_bool(w, slot == 0 && !store->trial);
    cbor_put_tstr(w, "active"); cbor_put_bool(w, slot == 0);
    cbor_put_tstr(w, "permanent"); cbor_put_bool(w, slot == 1 && store->permanent);
}

static void image_state_reply(const struct request *r)
{
    struct image_info s0 = image_info(store->slot[0], 0);
    /* An upload in progress leaves the secondary slot without a valid image to report. */
    struct image_info s1 = upload.active ? (struct image_info){0} : image_info(store->slot[1], 0);
    cbor_writer w = reply_writer();
    cbor_put_map(&w, 2);
    cbor_put_tstr(&w, "images");
    cbor_put_array(&w, (size_t)(s0.valid + s1.valid));
    if (s0.valid) put_slot(&w, 0, &s0);
    if (s1.valid) put_slot(&w, 1, &s1);
    cbor_put_tstr(&w, "splitStatus");
    cbor_put_uint(&w, 0);
    send_reply(r, &w);
}

static void image_state_write(const struct request *r)
{
    cbor_item hash, confirm;
    int has_hash = cbor_map_get(r->body, r->body_len, "hash", &hash) && hash.type == CBOR_BSTR && hash.value == 32;
    int do_confirm = cbor_map_get(r->body, r->body_len, "confirm", &confirm) && confirm.type == CBOR_SIMPLE && confirm.value == 21;
    struct image_info s0 = image_info(store->slot[0], 0);
    struct image_info s1 = upload.active ? (struct image_info){0} : image_info(store->slot[1], 0);
    if (do_confirm && (!has_hash || (s0.valid && memcmp(hash.ptr, s0.hash, 32) == 0))) {
        store->trial = 0;
    } else if (has_hash && s1.valid && memcmp(hash.ptr, s1.hash, 32) == 0) {
        store->pending = 1;
        store->permanent = (uint8_t)do_confirm;
    } else {
        send_error(r, has_hash ? ERR_ENOENT : ERR_EINVAL);
        return;
    }
    port_persist_sync();
    image_state_reply(r);
}

static void upload_reply(const struct request *r, int with_match, int match)
{
    cbor_writer w = reply_writer();
    cbor_put_map(&w, with_match ? 2 : 1);
    cbor_put_tstr(&w, "off");
    cbor_put_uint(&w, upload.off);
    if (with_match) {
        cbor_put_tstr(&w, "match");
        cbor_put_bool(&w, match);
    }
    send_reply(r, &w);
}

static void image_upload(const struct request *r)
{
    cbor_item off, data, len, sha;
    if (!cbor_map_get(r->body, r->body_len, "off", &off) || off.type != CBOR_UINT ||
        !cbor_map_get(r->body, r->body_len, "data", &data) || data.type != CBOR_BSTR) {
        send_error(r, ERR_EINVAL);
        return;
    }
    if (off.value == 0) {
        if (!cbor_map_get(r->body, r->body_len, "len", &len) || len.type != CBOR_UINT) { send_error(r, ERR_EINVAL); return; }
        int has_sha = cbor_map_get(r->body, r->body_len, "sha", &sha) && sha.type == CBOR_BSTR && sha.value == 32;
        if (len.value > SLOT_SIZE) { send_error(r, ERR_EMSGSIZE); return; }
        if (upload.known && has_sha && upload.len == len.value && memcmp(upload.sha, sha.ptr, 32) == 0 && upload.off > 0) {
            /* Same image as the interrupted upload: tell the client where to continue. */
            upload_reply(r, 0, 0);
            return;
        }
        upload.known = 1;
        upload.active = 1;
        upload.len = (uint32_t)len.value;
        upload.off = 0;
        if (has_sha) memcpy(upload.sha, sha.ptr, 32);
        else memset(upload.sha, 0, 32);
        store->pending = 0;
        store->permanent = 0;
        port_erase_delay();
        memset(store->slot[1], 0xff, SLOT_SIZE);
    } else if (!upload.known) {
        send_error(r, ERR_EBADSTATE);
        return;
    }
    if (off.value != upload.off) {
        /* Out of step (lost reply, duplicate, resume): the client continues from our offset. */
        upload_reply(r, 0, 0);
        return;
    }
    if (data.value > upload.len - upload.off) { send_error(r, ERR_EINVAL); return; }
    memcpy(store->slot[1] + upload.off, data.ptr, (size_t)data.value);
    upload.off += (uint32_t)data.value;
    if (upload.off < upload.len) {
        upload_reply(r, 0, 0);
        return;
    }
    uint8_t digest[32];
    sha256(store->slot[1], upload.len, digest);
    int match = memcmp(digest, upload.sha, 32) == 0;
    upload.active = 0;
    if (!match) {
        upload.known = 0;
        memset(store->slot[1], 0xff, SLOT_SIZE);
    }
    port_persist_sync();
    upload_reply(r, 1, match);
    smp_log("img: upload complete", match ? "" : ", sha mismatch: discarded");
}

static void dispatch(const uint8_t *p, size_t len)
{
    if (len < 8) return;
    struct request r;
    r.op = p[0] & 7;
    r.version = (p[0] >> 3) & 3;
    r.flags = p[1];
    size_t body_len = (size_t)p[2] << 8 | p[3];
    r.group = (uint16_t)(p[4] << 8 | p[5]);
    r.seq = p[6];
    r.command = p[7];
    if (body_len != len - 8 || (r.op != 0 && r.op != 2)) return;
    r.body = p + 8;
    r.body_len = body_len;
    if (r.version > 1) { send_error(&r, ERR_ENOTSUP); return; }
    if (r.group == 0 && r.command == 0 && r.op == 2) os_echo(&r);
    else if (r.group == 0 && r.command == 5 && r.op == 2) os_reset(&r);
    else if (r.group == 0 && r.command == 6 && r.op == 0) os_params(&r);
    else if (r.group == 1 && r.command == 0 && r.op == 0) image_state_reply(&r);
    else if (r.group == 1 && r.command == 0 && r.op == 2) image_state_write(&r);
    else if (r.group == 1 && r.command == 1 && r.op == 2) image_upload(&r);
    else send_error(&r, ERR_ENOTSUP);
}

void smp_server_rx(uint8_t byte)
{
    const uint8_t *packet;
    size_t n = smp_rx_byte(&rx, byte, &packet);
    if (n) dispatch(packet, n);
}
