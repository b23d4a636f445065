/*
 * QEMU mps2-an385 port: Cortex-M3 with the CMSDK APB UART0 at 0x40004000, polled. Reset is a real
 * SYSRESETREQ through the SCB, which makes QEMU reset the whole machine; the slots survive because they live
 * in a NOLOAD PSRAM section (see link.ld). Quitting QEMU is a power cut: the slots are gone, like RAM.
 */
#include "../../core/port.h"
#include "../../core/smp_server.h"
#include <stdint.h>
#include <string.h>

#define UART0_BASE 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0_BASE + 0x00))
#define UART_STATE (*(volatile uint32_t *)(UART0_BASE + 0x04))
#define UART_CTRL (*(volatile uint32_t *)(UART0_BASE + 0x08))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0_BASE + 0x10))
#define STATE_TX_FULL 1u
#define STATE_RX_FULL 2u
#define SCB_AIRCR (*(volatile uint32_t *)0xE000ED0Cu)

__attribute__((section(".slots"))) static struct persist slots;

extern uint32_t _data_load, _data_start, _data_end, _bss_start, _bss_end, _stack_top;
int main(void);

__attribute__((noreturn)) void reset_handler(void)
{
    uint32_t *src = &_data_load;
    for (uint32_t *dst = &_data_start; dst < &_data_end;) *dst++ = *src++;
    for (uint32_t *dst = &_bss_start; dst < &_bss_end;) *dst++ = 0;
    main();
    for (;;) {
    }
}

static void fault_handler(void)
{
    for (;;) {
    }
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&_stack_top,
    reset_handler,
    fault_handler, /* NMI */
    fault_handler, /* HardFault */
    fault_handler, /* MemManage */
    fault_handler, /* BusFault */
    fault_handler, /* UsageFault */
};

void port_write(const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        while (UART_STATE & STATE_TX_FULL) {
        }
        UART_DATA = data[i];
    }
}

void port_flush(void)
{
    while (UART_STATE & STATE_TX_FULL) {
    }
}

struct persist *port_persist(void) { return &slots; }
void port_persist_sync(void) {}
void port_erase_delay(void) {}

void port_reset(void)
{
    __asm__ volatile("dsb");
    SCB_AIRCR = 0x05FA0004u; /* VECTKEY | SYSRESETREQ */
    __asm__ volatile("dsb");
    for (;;) {
    }
}

int main(void)
{
    UART_BAUDDIV = 16;
    UART_CTRL = 3; /* TX and RX enable */
    static const struct smp_server_config config = {1, 0, 0, 0, 0};
    smp_server_boot(&config);
    for (;;) {
        while (!(UART_STATE & STATE_RX_FULL)) {
        }
        smp_server_rx((uint8_t)UART_DATA);
    }
}
